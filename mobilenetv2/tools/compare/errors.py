"""The exceptions of ``compare``: bad input (exit 2 on the command line) vs a missing extra."""
import os

from mobilenetv2 import files
from mobilenetv2.errors import Error

MAX_MODEL_BYTES = 2 << 30   # protobuf's own limit for one message; a .tflite of MobileNetV2 is ~14 MB


class CompareError(Error, ValueError):
    """OTHER, the weights, the mapping or the input cannot be used; the message says what to do."""


class MissingExtra(CompareError, ImportError):
    """An optional framework is not installed; the message names the pip extra that brings it."""

    def __init__(self, what, module, extra):
        super().__init__(f"{what} needs the {module!r} package, which is not installed: "
                         f'pip install "mobilenetv2[{extra}]"')


def require(module, what, extra):
    """Import ``module`` or raise MissingExtra naming the extra."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(what, module.split(".")[0], extra) from None


def open_input(path, what):
    """A binary file object on the regular file ``path`` (a FIFO or device refused at once)."""
    try:
        return os.fdopen(files.open_regular(path, what), "rb")
    except files.NotRegularFile as exc:
        raise CompareError(str(exc)) from None
    except OSError as exc:
        raise CompareError(f"{what} {files.path_str(path)!r} cannot be read: {exc.strerror or exc}") from None


def read_input(path, what, max_bytes):
    """The bytes of the regular file ``path``, refused past ``max_bytes`` before reading them."""
    try:
        return files.read_regular(path, what, max_bytes)
    except files.NotRegularFile as exc:
        raise CompareError(str(exc)) from None
    except OSError as exc:
        raise CompareError(f"{what} {files.path_str(path)!r} cannot be read: {exc.strerror or exc}") from None
