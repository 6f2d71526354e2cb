"""``python -m mobilenetv2`` is the ``mobilenetv2`` command."""
import sys

from mobilenetv2.cli import main

sys.exit(main())
