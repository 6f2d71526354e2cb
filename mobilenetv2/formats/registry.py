"""The 22 official ImageNet MobileNetV2 variants (with and without top): where their Keras .h5
files are, and how to get them.

The table is ``weights/registry.json`` (installed as ``mobilenetv2._registry``).  A file is looked
for in ``$MOBILENETV2_WEIGHTS_DIR``, then in Keras's own cache (``$KERAS_HOME/models``, by
default ``~/.keras/models``), so weights Keras already downloaded are used as they are.  Missing
files are downloaded into Keras's cache with urllib.

Environment:
  MOBILENETV2_WEIGHTS_DIR   a folder searched first (several may be joined with os.pathsep)
  MOBILENETV2_WEIGHTS_URL   the base URL to download from (a mirror: http, https or file; user:password@
                            is sent as HTTP Basic authentication, never shown; '/', '?', '#' and '@'
                            in them percent-encoded)
  MOBILENETV2_NO_DOWNLOAD   set to 1 to make a missing file an error instead of a download ("", 0,
                            false, no and off leave downloading on)
  KERAS_HOME                Keras's folder, as Keras reads it
"""
import base64
import functools
import hashlib
import http.client
import importlib.resources
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import urllib.response
from http.client import HTTPException
from pathlib import Path

import numpy as np

from mobilenetv2.errors import ArgumentError, DownloadError, flag, is_whole, real  # re-exported: registry.DownloadError

ENV_DIR = "MOBILENETV2_WEIGHTS_DIR"
ENV_URL = "MOBILENETV2_WEIGHTS_URL"
ENV_NO_DOWNLOAD = "MOBILENETV2_NO_DOWNLOAD"
_CHUNK = 1 << 20




@functools.lru_cache(maxsize=None)
def _table():
    try:
        text = importlib.resources.files("mobilenetv2._registry").joinpath("registry.json").read_text()
    except ModuleNotFoundError:  # a source checkout, not installed: the file beside the package
        text = (Path(__file__).resolve().parents[2] / "weights" / "registry.json").read_text()
    return json.loads(text)


def variants():
    """Every official weights file: dicts with alpha, rows, include_top, file, size, sha256, url
    (without the user:password@ a mirror's URL may hold)."""
    return [dict(v, url=_split_userinfo(_file_url(v["file"]))[0]) for v in _table()["variants"]]


def _key(alpha, rows, include_top):
    """(alpha, rows, include_top) as the table holds them, or None where alpha or rows is no
    number of the kind the model takes (rows a whole number, not 224.7 or "224"; alpha a real
    number, not True or "1.0"); a NumPy float narrower than Python's that is an official alpha
    at its own precision is that alpha (np.float32(0.35) is 0.35, as the model reads it).  An
    include_top that is no flag (2, "False", None) is an ArgumentError: read as a bool, "False"
    was the file with the top."""
    top = flag(include_top)
    if top is None:
        raise ArgumentError(f"include_top must be True or False, got {include_top!r:.60}")
    value = real(alpha)
    if value is None or not is_whole(rows):
        return None
    narrow = np.asarray(alpha).dtype
    if narrow.kind == "f" and narrow.itemsize < 8:
        value = next((v["alpha"] for v in _table()["variants"]
                      if narrow.type(v["alpha"]) == narrow.type(value)), value)
    return value, int(rows), top


def _entry(alpha, rows, include_top):
    key = _key(alpha, rows, include_top)
    for v in _table()["variants"]:
        if (v["alpha"], v["rows"], v["include_top"]) == key:
            return v
    pairs = sorted({(v["alpha"], v["rows"]) for v in _table()["variants"]})
    same_alpha = [r for a, r in pairs if key and a == key[0]]
    hint = f" (alpha={key[0]} has rows {', '.join(map(str, same_alpha))})" if same_alpha else ""
    raise ArgumentError(f"no official MobileNetV2 weights for alpha={alpha!r}, rows={rows!r}{hint}; "
                        "the 22 variants (alpha, rows) are: " + ", ".join(f"({a}, {r})" for a, r in pairs))


def weights_filename(alpha, rows, include_top=True):
    """Keras's file name, e.g. 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5'."""
    return _entry(alpha, rows, include_top)["file"]


def _file_url(name):
    """The URL of the file ``name`` at the mirror (or Keras's address): the name is the last
    segment of the base's path, before a query the base may hold (``https://host/w?token=x``:
    ``https://host/w/<name>?token=x``, not ``...w?token=x/<name>``, a request for ``/w``); a
    fragment, never sent, is left out."""
    base = os.environ.get(ENV_URL) or _table()["base_url"]
    _check_userinfo_encoded(base)
    base = base.partition("#")[0]
    path, mark, query = base.partition("?")
    return path + ("" if path.endswith("/") else "/") + name + mark + query


def _check_userinfo_encoded(url, what=f"${ENV_URL}"):
    """A DownloadError, before any request, where ``url`` has a user name or password holding an
    unencoded '/', '?' or '#': urllib ends the host part there, so ``https://u:pa/ss@host/x/`` is
    host 'u', port 'pa' and path '/ss@host/x/' (a request to the wrong host, and a URL shown with
    the password in it).  The sign is a port that is not a number (or an empty one with an '@'
    after the host part).  The message, about ``what``, repeats nothing of the URL: any part of
    it may be the password."""
    _, sep, rest = url.partition("://")
    if not sep:
        return
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    host = rest[:end].rpartition("@")[2]
    port = host.rpartition("]")[2] if host.startswith("[") else host
    if _userinfo_cut_at_slash(rest[:end], rest[end:], port):
        raise DownloadError(f"{what} has an '@' in its first path segment after what reads as a user name and "
                            "password, or a host and port: a '/', '?' or '#' in a user name or password ends "
                            "the host part there (the URL is not shown: it may hold the password); "
                            "percent-encode '/', '?', '#' and '@' in the user name and password (%2F, %3F, "
                            "%23, %40), and an '@' in the path as %40")
    if ":" not in port:
        return
    port = port.rpartition(":")[2]
    if port.isascii() and port.isdigit() and int(port) > 65535:  # getaddrinfo takes it modulo 65536
        raise DownloadError(f"{what} has a port above 65535, which would be read as another port "
                            "(the URL is not shown: it may hold the password); give the port as a "
                            "number from 0 to 65535")
    if (port.isascii() and port.isdigit()) or (not port and "@" not in rest[end:]):
        return
    raise DownloadError(f"{what} has a port that is not a number: urllib ends the host part at the first "
                        "'/', '?' or '#', so one in a user name or password makes the user name the host "
                        "and the rest the port and path "
                        "(the URL is not shown: it may hold the password); percent-encode '/', '?', '#' "
                        "and '@' in the user name and password (%2F, %3F, %23, %40)")


def _userinfo_cut_at_slash(authority, after, port):
    """Whether a URL whose host part is ``authority``, followed by ``after`` (from its '/', '?'
    or '#' on), is one whose user name or password held an unencoded '/', '?' or '#' that ended
    the host part early, though the port left reads as a number: ``u:12/ss@host`` (host 'u',
    port 12, password '12/ss') or ``us/er:pw@host`` (user 'us/er').  The sign: no '@' in the host
    part, an '@' past the start of the first path segment, and a ':' before it, in that segment
    or as the host part's port.  A path with an '@' alone (``unpkg.com/pkg@1.0/``) is taken."""
    if not after or "@" in authority:
        return False
    segment = after[1:].split("/", 1)[0]
    head, at, _ = segment.partition("@")
    return bool(at and head) and (":" in head or ":" in port)


def _split_userinfo(url, proxy=False):
    """(``url`` without the ``user:password@`` before its host, that ``user:password`` or None):
    the URL as a browser shows it, every other character as given (percent-encoding, port,
    [IPv6] brackets).  The host part is read as urllib reads it: a URL's ends at its first '/',
    '?' or '#'; a proxy's, which may lack its scheme:// (``user:pw@host:3128``), at the first '/'
    after its first '@' (urllib.request's _parse_proxy)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if proxy and "@" in rest:
        end = rest.find("/", rest.find("@"))
    else:
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=-1)
    authority = rest if end < 0 else rest[:end]
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return url, None
    return scheme + sep + host + rest[len(authority):], userinfo


def _credentials(url):
    """(``url`` without the ``user:password@`` a mirror's URL may hold, the HTTP Basic
    Authorization they make or None): credentials are sent to that host, never shown in a
    message, never sent on to where it redirects."""
    _check_userinfo_encoded(url, "the download URL")
    bare, userinfo = _split_userinfo(url)
    if userinfo is None:
        return bare, None
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    return bare, "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def downloads_allowed():
    """False where $MOBILENETV2_NO_DOWNLOAD turns downloading off: any value but "", 0, false, no
    and off (in any case; "false" turned it off, as every value but "" and "0" did)."""
    return os.environ.get(ENV_NO_DOWNLOAD, "").strip().lower() in ("", "0", "false", "no", "off")


def what_loading_does(path, alpha, rows, include_top=True):
    """What loading does with ``path``, a file found for the variant that is not the registry's:
    one in Keras's cache is downloaded over where downloading is on, any other is refused."""
    cache = keras_cache_dir() / _entry(alpha, rows, include_top)["file"]
    if Path(path) == cache and downloads_allowed():
        return "loading downloads the official file over it"
    return "loading refuses it"


def weights_url(alpha, rows, include_top=True):
    """Where the file is downloaded from ($MOBILENETV2_WEIGHTS_URL replaces the base), without
    the user:password@ a mirror's URL may hold."""
    return _split_userinfo(_file_url(weights_filename(alpha, rows, include_top)))[0]


def keras_cache_dir():
    """Keras's download folder: $KERAS_HOME/models, by default ~/.keras/models."""
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return Path(home).expanduser() / "models"


def search_dirs():
    """The folders searched for weights files, in order."""
    dirs = [Path(d).expanduser() for d in os.environ.get(ENV_DIR, "").split(os.pathsep) if d]
    return dirs + [keras_cache_dir()]


def find_weights(alpha, rows, include_top=True):
    """The path of the variant's file in the search folders, or None."""
    name = weights_filename(alpha, rows, include_top)
    for d in search_dirs():
        if (d / name).is_file():
            return d / name
    return None


def found_weights(alpha, rows, include_top=True):
    """(path, problem): the variant's file in the search folders (or None), and why loading would
    refuse it (its size or SHA-256 not the registry's; None where it is the official file)."""
    entry = _entry(alpha, rows, include_top)
    path = find_weights(alpha, rows, include_top)
    return path, (_verify_found(path, entry) if path is not None else None)


def _verify_found(path, entry):
    """verify_file for a file found in the search folders: one in Keras's cache, ours to manage,
    must also be a whole HDF5 file where the registry records no SHA-256 (Keras writes a download
    into the file's own name, so a Keras download killed part way leaves a truncated file there;
    a download of those bytes would be refused); the user's own folder's files are theirs."""
    whole = Path(path) == keras_cache_dir() / entry["file"]
    return verify_file(path, entry["size"], entry["sha256"], whole=whole)


_GIVE_A_FILE = "pass weights='path/to/file.h5' (--weights on the command line)"


def resolve(alpha, rows, include_top=True, download=True, progress=None):
    """The path of the variant's file: found in the search folders, else downloaded into
    Keras's cache.  ``progress`` shows a progress bar on stderr (None: when stderr is a tty).

    A file found is checked against the registry's size and SHA-256 (where recorded) the first
    time this process uses it; a wrong file in Keras's cache (ours to manage) is replaced by a
    download (said on stderr; kept where the download fails), a wrong file in
    $MOBILENETV2_WEIGHTS_DIR is an error naming it.  A failed download says where the file may
    be put instead."""
    entry = _entry(alpha, rows, include_top)
    allowed = download and downloads_allowed()
    found = find_weights(alpha, rows, include_top)
    cache = keras_cache_dir() / entry["file"]
    if found is not None:
        problem = _verify_found(found, entry)
        if problem is None:
            return found
    url = _file_url(entry["file"])  # from here on: a mirror URL urllib misreads is refused
    shown = _split_userinfo(url)[0]
    if found is not None:
        if found != cache or not allowed:
            raise DownloadError(f"weights file {str(found)!r} is not the official "
                                f"{entry['file']}: {problem}; delete it (or download {shown} again)")
        # ours: a wrong file in Keras's cache is never used, and replaced only by a good download
        print(f"mobilenetv2: {str(cache)!r} is not the official {entry['file']} ({problem}): "
              "downloading it again", file=sys.stderr)
    if not allowed:
        looked = ", ".join(str(d) for d in search_dirs())
        why = f"{ENV_NO_DOWNLOAD} is set" if download else "download=False"
        raise FileNotFoundError(
            f"MobileNetV2 weights file {entry['file']!r} not found (looked in: {looked}) and "
            f"downloading is off ({why}); download {shown} into one of those folders "
            f"(or set {ENV_DIR}), or {_GIVE_A_FILE}")
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        return download_file(url, cache, entry["size"], entry["sha256"], progress)
    except DownloadError as exc:
        kept = f"; the wrong file {str(cache)!r} is kept" if found is not None else ""
        raise DownloadError(f"{exc}{kept}. Without a download: put the official file in {cache.parent} "
                            f"(or in a folder named by {ENV_DIR}), or {_GIVE_A_FILE}; "
                            f"{ENV_NO_DOWNLOAD}=1 turns downloading off") from None


_VERIFIED = {}  # (path, device, inode, size, mtime_ns, size and sha256 asked for) -> None (good) or the problem


def _file_key(path):
    st = os.stat(path)
    return (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), st.st_size


def verify_file(path, size, sha256, whole=False):
    """None where ``path`` has the registry's ``size`` and ``sha256`` (each checked where not
    None), and, where ``whole`` and no ``sha256`` is given, starts as HDF5 and ends where its
    superblock says; else what is wrong.  The answer is kept per process for the file's identity,
    size and modification time, and what it was checked against, so a file is hashed once however
    many models load it."""
    whole = bool(whole) and sha256 is None  # a SHA-256 checks every byte
    key, actual = _file_key(path)
    key += (size, sha256, whole)  # the answer holds for what was checked, not for any size or hash
    if key in _VERIFIED:
        return _VERIFIED[key]
    problem = None
    if size is not None and actual != size:
        problem = f"it has {actual} bytes, the registry says {size}"
    elif sha256 is None:
        if whole:  # nothing to compare its bytes with: at least whole, as a download must be
            problem = _incomplete_hdf5(path, actual)
    else:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            problem = f"its SHA-256 is {digest.hexdigest()}, the registry says {sha256}"
    _VERIFIED[key] = problem
    return problem


def _incomplete_hdf5(path, actual):
    """Why ``path`` (``actual`` bytes) is not a whole HDF5 file, or None: it must start with
    the HDF5 signature and end where its superblock says (a download killed part way, by Keras,
    which writes into the file's own name, or by power loss, is shorter)."""
    from mobilenetv2.formats import loader
    with open(path, "rb") as f:
        head = f.read(64)
    if not actual:
        return "it is empty (0 bytes)"
    if not head.startswith(HDF5_MAGIC):
        return f"it is not an HDF5 file ({actual} bytes, starting with {head[:8]!r})"
    end = loader._superblock_end(head)
    if end is not None and end != actual:
        return (f"it has {actual} bytes and its HDF5 superblock says {end}: "
                + ("truncated (an interrupted download?)" if actual < end else "bytes were appended"))
    return None


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, name, total):
        self.name, self.total, self.last = name, total, 0.0

    def update(self, done, final=False):
        now = time.monotonic()
        if not final and now - self.last < 0.1:
            return
        self.last = now
        if self.total:
            line = f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB ({100 * done // self.total}%)"
        else:
            line = f"{done / 1e6:.1f} MB"
        sys.stderr.write(f"\r{self.name}: {line}" + ("\n" if final else ""))
        sys.stderr.flush()


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_UNKNOWN_SIZE = 64 << 20  # a file whose size the registry lacks: the largest official is ~25 MB
DEADLINE = 600.0             # seconds for a whole download (at 100 kB/s the largest file takes 250 s)
_READ_TIMEOUT = 60.0         # seconds any single read may wait


def _clean_stale_parts(folder, name):
    """Remove ``.<name>.*.part`` files no live download holds: every download keeps an
    exclusive lock on its part file, so a part file whose lock can be taken was left by a
    process that died (SIGKILL, power loss) and is removed."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): leave them; they are never used as weights
        return
    for part in Path(folder).glob(f".{name}.*.part"):
        try:
            fd = os.open(part, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a download in progress in another process
            continue
        try:
            part.unlink()
        except OSError:
            pass
        os.close(fd)


def _new_part(dest):
    """(fd, path) of a new part file beside ``dest``, locked.  Another download's clean-up may
    open and lock a part file between its creation and its lock, to remove it: such a file
    (still locked by it, or already gone from its path once locked here) is given up for
    another."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        if _lock(fd) and _still_at(fd, tmp):
            return fd, tmp
        os.close(fd)


def _still_at(fd, path):
    """Whether ``path`` is still the file open as ``fd`` (not removed, nor replaced)."""
    try:
        here, there = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _lock(fd):
    """Lock ``fd``: False where another process holds its lock; True where it is ours, or where
    there are no locks (no flock, a file system without them), and it stays unlocked."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except (ImportError, OSError):
        pass
    return True


def download_file(url, dest, size=None, sha256=None, progress=False, deadline=None):
    """Download ``url`` to ``dest`` through a temporary ``.part`` file in the same folder,
    renamed into place only once complete and checked: no more than ``size`` bytes are read
    (64 MB where unknown), the size and ``sha256`` are checked where known, and the body must
    start like an HDF5 file.  The whole download must finish within ``deadline`` seconds
    (default DEADLINE).  On any failure or interruption the part file is removed and ``dest``
    is untouched; part files left by killed processes are removed first.  The file gets the
    permissions the user's umask gives.  A ``user:password@`` in the URL is sent as HTTP Basic
    authentication, and never shown in a message."""
    from mobilenetv2.files import current_umask
    dest = Path(dest)
    url, auth = _credentials(url)
    if url.partition(":")[0].lower() not in ("http", "https", "file"):
        # urllib reads ftp:// (and data:) too, through sockets the deadline does not hold
        raise DownloadError(f"cannot download {url}: only http://, https:// or file:// URLs are "
                            f"downloaded from (set {ENV_URL} to a mirror's)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_parts(dest.parent, dest.name)
        fd, tmp = _new_part(dest)
    except OSError as exc:
        raise _cannot_save(url, dest, exc) from None
    try:
        with os.fdopen(fd, "wb") as out:
            done, digest = _fetch(url, auth, out, size, progress,
                                  time.monotonic() + (DEADLINE if deadline is None else deadline))
            if size is not None and done != size:
                raise DownloadError(f"downloaded {done} bytes from {url}, the registry says the file "
                                    f"has {size}: incomplete download (try again)")
            if sha256 is not None and digest != sha256:
                raise DownloadError(f"the file downloaded from {url} has SHA-256 {digest}, the "
                                    f"registry says {sha256}: corrupt download or a different file")
            out.flush()
            if sha256 is None:  # nothing to compare with: at least a whole, safe HDF5 file
                _check_hdf5(tmp, url)
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o666 & ~current_umask())
            os.replace(tmp, dest)  # while the lock is held: never removed as stale
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, DownloadError):
            raise _cannot_save(url, dest, exc) from None
        raise
    _VERIFIED[_file_key(dest)[0] + (size, sha256, sha256 is None)] = None  # (whole: _check_hdf5)
    return dest


def _cannot_save(url, dest, exc):
    """The error for a download the local file system could not take (the network is not to
    blame): a folder that cannot be made or written, a full disk, a folder where the file goes."""
    return DownloadError(f"cannot save the download of {url} as {str(dest)!r}: {exc} (its folder "
                         "must be writable, with room for the file)")


def _check_hdf5(path, url):
    from mobilenetv2.formats import loader
    try:
        loader.check_file(path)
    except (loader.WeightsError, OSError) as exc:
        raise DownloadError(f"{url} did not send a complete HDF5 file ({exc}); try again") from None


class _Watchdog:
    """The deadline of one download, held on its sockets: when it passes, every socket the
    download opened is shut down, so a read blocked on a server that sends a byte now and then
    (headers, chunk-size lines or body: each byte restarts a socket timeout) ends at once."""

    def __init__(self, deadline):
        self.lock = threading.Lock()
        self.socks, self.expired = [], False
        self.timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self.expire)
        self.timer.daemon = True
        self.timer.start()

    def add(self, sock):
        with self.lock:
            self.socks.append(sock)
            if self.expired:
                self._shut(sock)

    def expire(self):
        with self.lock:
            self.expired = True
            for sock in self.socks:
                self._shut(sock)

    @staticmethod
    def _shut(sock):
        try:  # the OS socket under a TLS one too: the reader then sees end of file
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self):
        self.timer.cancel()

    def opener(self):
        """A urllib opener whose HTTP(S) connections report their sockets to this watchdog, and
        which refuses a redirect from https to http."""
        watch = self

        def watched(base):
            class Connection(base):
                def __init__(self, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    create = self._create_connection

                    def create_watched(*args, **kwargs):  # from the start: a proxy's reply to
                        sock = create(*args, **kwargs)    # CONNECT and the TLS handshake too
                        watch.add(sock)
                        return sock
                    self._create_connection = create_watched

                def connect(self):
                    super().connect()
                    watch.add(self.sock)  # the TLS socket, which took over the one above
            return Connection

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(watched(http.client.HTTPConnection), req)

        handlers = [HTTP(), _NoDowngrade(), _RegularFileHandler()]
        if hasattr(http.client, "HTTPSConnection"):
            class HTTPS(urllib.request.HTTPSHandler):
                def https_open(self, req):
                    return self.do_open(watched(http.client.HTTPSConnection), req,
                                        context=self._context)
            handlers.append(HTTPS())
        return urllib.request.build_opener(*handlers)


class _RegularFileHandler(urllib.request.FileHandler):
    """file:// as urllib opens it (a path on this machine), but a regular file only, opened
    without waiting: urllib's open() of a FIFO blocks until something writes to it, where no
    deadline reaches (the watchdog holds sockets), and a device is no weights file."""

    def open_local_file(self, req):
        import email.utils
        from mobilenetv2 import files
        if req.host:  # as urllib: the host must be this machine's, without a port
            try:
                parts = urllib.parse.urlsplit("//" + req.host)
                local = parts.port is None and socket.gethostbyname(parts.hostname or "") in self.get_names()
            except (ValueError, OSError):
                local = False
            if not local:
                raise urllib.error.URLError("file not on local host")
        try:
            fd = files.open_regular(urllib.request.url2pathname(req.selector), "file")
        except files.NotRegularFile as exc:
            raise urllib.error.URLError(exc.problem) from None
        except OSError as exc:
            raise urllib.error.URLError(exc) from None
        st = os.fstat(fd)
        headers = email.message_from_string(f"Content-length: {st.st_size}\nLast-modified: "
                                            f"{email.utils.formatdate(st.st_mtime, usegmt=True)}\n")
        return urllib.response.addinfourl(os.fdopen(fd, "rb"), headers, req.full_url)


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Redirects as urllib follows them (at most 10), to http and https only (urllib follows one
    to ftp too, whose sockets the deadline does not hold), and never from https to plain http,
    which would let anyone on the path replace the file."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        here, there = _split_userinfo(req.full_url)[0], _printable(_split_userinfo(target.geturl())[0])
        if target.scheme not in ("http", "https"):
            raise DownloadError(f"{here} redirects to {there}: only http and https are followed")
        if urllib.parse.urlsplit(req.full_url).scheme == "https" and target.scheme != "https":
            raise DownloadError(f"{here} redirects to {there}, from https to {target.scheme}: refused")
        if not _port_in_range(target.netloc):
            raise DownloadError(f"{here} redirects to {there}: its port is not a number from 0 to "
                                "65535 (a larger one would be read as another port)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _port_in_range(netloc):
    """Whether the port of a URL's ``netloc`` (user:password@host:port) is absent, empty, or a
    number from 0 to 65535: a larger one reaches getaddrinfo, which takes it modulo 65536."""
    host = netloc.rpartition("@")[2]
    port = host.rpartition("]")[2] if host.startswith("[") else host
    port = port.rpartition(":")[2] if ":" in port else ""
    return not port or (port.isascii() and port.isdigit() and int(port) <= 65535)


def _fetch(url, auth, out, size, progress, deadline):
    """Copy ``url`` into the open file ``out``; return (bytes written, SHA-256 hex)."""
    watch = _Watchdog(deadline)
    try:
        return _fetch_watched(url, auth, out, size, progress, deadline, watch)
    finally:
        watch.cancel()


def _fetch_watched(url, auth, out, size, progress, deadline, watch):
    limit = size if size is not None else MAX_UNKNOWN_SIZE
    done = 0

    def remaining():
        left = deadline - time.monotonic()
        if left <= 0 or watch.expired:
            raise DownloadError(f"download of {url} did not finish within its deadline "
                                f"(after {done} bytes): a stalled or very slow server; try again")
        return left

    try:
        request = urllib.request.Request(url)
        if auth:
            request.add_unredirected_header("Authorization", auth)
        response = watch.opener().open(request, timeout=min(_READ_TIMEOUT, remaining()))
    except urllib.error.HTTPError as exc:
        exc.close()
        reason = str(exc.reason)
        if 300 <= exc.code < 400 and reason.startswith(urllib.request.HTTPRedirectHandler.inf_msg):
            reason = "redirects in a loop, or more than 10 times"  # urllib's says it in three lines
        raise DownloadError(f"cannot download {url}{_via_proxy(url)}: HTTP {exc.code} "
                            f"{_printable(reason)}") from None
    except DownloadError:
        raise
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
        remaining()  # the deadline, where it is what ended the request
        why = _without_proxy_credentials(str(getattr(exc, "reason", None) or repr(exc)))
        raise DownloadError(f"cannot download {url}{_via_proxy(url)}: {_printable(why, 1000)}") from None
    digest = hashlib.sha256()
    with response:
        status = getattr(response, "status", 200)
        if status is not None and status != 200:
            raise DownloadError(f"cannot download {url}: HTTP {status} (expected 200)")
        encoding = (response.headers.get("Content-Encoding") or "identity").strip()
        if encoding.lower() != "identity":  # never asked for (no Accept-Encoding is sent)
            raise DownloadError(f"{url} sent the file with Content-Encoding {encoding[:40]!r}: only the "
                                ".h5 file as it is is taken (a mirror must serve it uncompressed)")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        if length is not None and size is not None and length != size:
            raise DownloadError(f"{url} is {length} bytes, the registry says the file has {size}: "
                                "not the expected file")
        if length is not None and length > limit:
            raise DownloadError(f"{url} is {length} bytes, more than any MobileNetV2 weights file "
                                f"({limit} bytes at most): not a weights file")
        bar = _Progress(url.rsplit("/", 1)[-1], length or size) if progress else None
        head = b""
        while True:
            _sock_timeout(response, min(_READ_TIMEOUT, remaining()))
            try:
                chunk = response.read1(min(_CHUNK, limit + 1 - done)) if hasattr(response, "read1") \
                    else response.read(min(_CHUNK, limit + 1 - done))
            except (HTTPException, OSError, ValueError) as exc:
                remaining()
                raise DownloadError(f"download of {url} broke off after {done} bytes ({exc!r})") from None
            remaining()
            if not chunk:
                break
            done += len(chunk)
            if done > limit:
                raise DownloadError(f"{url} sent more than {limit} bytes, "
                                    + ("the registry's size of the file" if size is not None
                                       else "more than any MobileNetV2 weights file")
                                    + ": not the expected file")
            if len(head) < len(HDF5_MAGIC):
                head += chunk[:len(HDF5_MAGIC) - len(head)]
                if head != HDF5_MAGIC[:len(head)]:
                    raise DownloadError(f"{url} did not send an HDF5 file (it starts with "
                                        f"{head!r}; an error page?)")
            out.write(chunk)  # a local failure (a full disk): download_file says so
            digest.update(chunk)
            if bar:
                bar.update(done)
        remaining()  # a socket the watchdog shut down reads as the end of the file
        if bar:
            bar.update(done, final=True)
    if length is not None and done != length:
        raise DownloadError(f"download of {url} broke off: got {done} of {length} bytes")
    if done < len(HDF5_MAGIC):
        raise DownloadError(f"{url} sent {done} bytes: not a weights file")
    return done, digest.hexdigest()


def _printable(text, limit=200):
    """``text`` a server sent (a reason phrase, a Location) as one line safe to print: at most
    ``limit`` characters, anything unprintable (a newline, a terminal's escape sequence) written
    as a Python escape, so a server cannot clear, recolour or rewrite the user's terminal."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _via_proxy(url):
    """' (through the proxy P, from $scheme_proxy)' where urllib sends ``url`` through a proxy
    the environment names (its refusal is not the server's), else ''."""
    try:
        parts = urllib.parse.urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return ""
    except ValueError:
        return ""
    return f" (through the proxy {_split_userinfo(proxy, proxy=True)[0]}, from ${parts.scheme}_proxy)"


def _without_proxy_credentials(text):
    """``text`` (urllib's, which quotes a proxy it cannot read: 'proxy URL with no authority:
    ...') with the user:password of every proxy the environment names, and each password,
    replaced by '***'."""
    for proxy in urllib.request.getproxies().values():
        userinfo = _split_userinfo(proxy, proxy=True)[1]
        if userinfo:
            password = userinfo.partition(":")[2]
            for secret in (userinfo, password, urllib.parse.unquote(password)):
                if secret:
                    text = text.replace(secret, "***")
    return text


def _sock_timeout(response, seconds):
    """Shorten the socket timeout of an HTTP response to what is left of the deadline."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        try:
            sock.settimeout(max(seconds, 0.001))
        except OSError:
            pass
