"""Files in and out: open only a regular file (never block on a FIFO or a device), and write
outputs atomically (a temporary file in the same folder, renamed into place) with the
permissions the user's umask gives a new file, like ``open(path, 'w')`` does."""
import contextlib
import os
import stat
import tempfile
import threading

from mobilenetv2.errors import ArgumentError, Error, OutputPathError, a_or_an

_UMASK_LOCK = threading.Lock()


def current_umask():
    """The process umask, read without changing it where Linux says it (/proc), else by the
    set-and-restore dance under a lock."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def path_str(path):
    """A path (str, bytes or os.PathLike) as Python's own str, to use and to name in messages:
    os.fsdecode hands NumPy's np.str_ (an element of an array of paths) back as it is, and its
    repr reads "np.str_('x.h5')" in a message."""
    return str(os.fsdecode(path))


def open_regular(path, what="file"):
    """A read-only descriptor on ``path`` (str, bytes or PathLike) that is a regular file.

    The file is opened with O_NONBLOCK, so a FIFO or a device returns at once instead of
    hanging, then checked with fstat on that same descriptor (no race between check and use).
    Raises FileNotFoundError, IsADirectoryError or PermissionError as os.open does, and
    NotRegularFile (which callers turn into their own error) for a FIFO, device or socket, or a
    path with a NUL character."""
    if "\0" in path_str(path):  # (os.open's own ValueError, "embedded null byte", escaped every caller)
        raise NotRegularFile(f"{what} path {path_str(path)!r} contains a NUL character, which no file name has")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, f"{what} path is a directory", path_str(path))
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            problem = f"is {kind}, not a regular file; give the path of {a_or_an(what)}"
            raise NotRegularFile(f"{what} {path_str(path)!r} {problem}", problem)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


class NotRegularFile(Error, ValueError):
    """Raised by open_regular; callers re-raise it as their own error class (``problem``: the
    message without the file's name, for an error class that names the file itself)."""

    def __init__(self, message, problem=None):
        super().__init__(message)
        self.problem = problem or message


class TooLarge(NotRegularFile):
    """Raised by read_regular for a file over its size limit."""


def read_regular(path, what, max_bytes):
    """The bytes of the regular file ``path`` (open_regular's checks), refusing one larger than
    ``max_bytes`` (TooLarge) before reading past that bound."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        data = read_bounded(f, max_bytes)
    if data is None:
        raise TooLarge(f"{what} {path_str(path)!r} is larger than {max_bytes} bytes")
    return data


def read_bounded(f, max_bytes):
    """The bytes of the open file ``f`` from its start, or None where it holds more than
    ``max_bytes`` (found before reading past that bound).  What fstat says is there is read, and
    a byte more: ``f.read(n)`` sets aside n bytes before it reads, and a limit may be GiB for a
    file of a few KB.  A file that grew since is read on, in 1 MiB pieces, to the limit."""
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes:
        return None
    data = f.read(size + 1)
    if len(data) > size:
        parts, total = [data], len(data)
        while total <= max_bytes and (part := f.read(min(1 << 20, max_bytes + 1 - total))):
            parts.append(part)
            total += len(part)
        data = b"".join(parts)
    return data if len(data) <= max_bytes else None


def outside_folder(folder, path):
    """None when ``path`` (a file in ``folder``, perhaps a symbolic link) resolves inside
    ``folder``, or inside the ``blobs/`` of a Hugging Face hub cache when ``folder`` is one of its
    ``snapshots/<revision>`` folders (the hub links every file there); else the resolved path,
    which a reader of ``folder`` must not open."""
    real_folder = os.path.realpath(path_str(folder))
    real = os.path.realpath(path_str(path))
    allowed = [real_folder]
    parent = os.path.dirname(real_folder)
    if os.path.basename(parent) == "snapshots":
        allowed.append(os.path.join(os.path.dirname(parent), "blobs"))
    if any(os.path.commonpath([root, real]) == root for root in allowed):
        return None
    return real


class OutsideFolder(NotRegularFile):
    """Raised by folder_member for a symbolic link that leaves its folder."""


def folder_member(folder, name):
    """``folder/name``, or OutsideFolder when it is a symbolic link resolving outside the folder
    (outside_folder's rule): a folder from a stranger must not make us read another file."""
    member = os.path.join(path_str(folder), name)
    target = outside_folder(folder, member) if os.path.lexists(member) else None
    if target is not None:
        raise OutsideFolder(f"{member!r} is a symbolic link to {target!r}, outside the checkpoint "
                            "folder: copy the file into the folder if you trust it")
    return member


def output_str(path, what="output"):
    """An output path (str, bytes or os.PathLike) as a str; anything else is a bad argument."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise ArgumentError(f"{what} path must be a str or os.PathLike, got {type(path).__name__} {path!r:.80}")
    if "\0" in path_str(path):  # (os's own ValueError: "embedded null byte")
        raise ArgumentError(f"{what} path {path_str(path)!r:.80} contains a NUL character, which no file name has")
    return path_str(path)


def check_output_path(path, what="output"):
    """``path`` as a str, refusing what would silently write somewhere else (an empty path, a
    path ending in a separator, or an existing folder) or fail only once the work is done (a
    folder that does not exist or that this process may not write to)."""
    path = output_str(path, what)
    if not path or not path.strip():
        raise OutputPathError(f"{what} path is empty: give a file name")
    if path.endswith((os.sep, "/")) or (os.altsep and path.endswith(os.altsep)):
        raise OutputPathError(f"{what} path {path!r} ends with a path separator (a folder): give a file name")
    if os.path.isdir(path):
        raise OutputPathError(f"{what} path {path!r} is an existing folder: give a file name inside it")
    _refuse_a_special_file(path, what)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise OutputPathError(f"{what} path {path!r}: folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):  # said now, not as the file is written after the work
        raise OutputPathError(f"{what} path {path!r}: folder {parent!r} is not writable (give a path in a "
                              "folder you may write to)")
    return path


def _refuse_a_special_file(path, what):
    """An OutputPathError where ``path`` exists and is no regular file (a FIFO, a device such as
    /dev/null or /dev/stdout, a socket): the rename that writes an output would replace it, for
    every user of the system where this process is root."""
    if os.path.exists(path) and not os.path.isfile(path):
        raise OutputPathError(f"{what} path {path!r} exists and is not a regular file (a FIFO, device or "
                              "socket, which writing the file would replace): give the path of a file")


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path in ``path``'s folder; when the block ends without an exception it
    gets the umask's permissions and is renamed to ``path``; otherwise it is removed."""
    path = os.path.abspath(os.fspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix + ".tmp",
                                   dir=os.path.dirname(path))
    except OSError as e:  # a read-only folder: said of the file asked for, not of our temporary one
        raise OSError(e.errno, e.strerror, path) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        _refuse_a_special_file(path, "output")  # (made since check_output_path looked)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and e.filename in (None, tmp):  # a full disk: the same
            raise OSError(e.errno, e.strerror, path) from None
        raise


@contextlib.contextmanager
def atomic_write(path, suffix=""):
    """Like atomic_path, yielding the temporary file open for binary writing."""
    with atomic_path(path, suffix) as tmp:
        with open(tmp, "wb") as f:
            yield f


def save_figure(fig, path, dpi):
    """Write a matplotlib figure to exactly ``path`` (checked by check_output_path), atomically,
    in the format its suffix names (png where the suffix names none matplotlib writes): given a
    path without a suffix, matplotlib's own savefig writes another file, ``path.png``."""
    path = check_output_path(path, "plot")
    fmt = os.path.splitext(path)[1][1:].lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        fmt = "png"
    with atomic_write(path, suffix="." + fmt) as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return os.path.abspath(path)
