"""Writing an output file whole or not at all."""
import os
import tempfile


def write_atomically(path, write, suffix=""):
    """Call ``write(f)`` on a temporary file in ``path``'s folder, then rename it to ``path``:
    an interrupted or failed write leaves no half-written file.  Returns the absolute path."""
    path = os.path.abspath(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
