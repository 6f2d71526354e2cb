"""The 22 official ImageNet MobileNetV2 variants (with and without top): where their Keras .h5
files are, and how to get them.

The table is ``weights/registry.json`` (installed as ``mobilenetv2._registry``).  A file is looked
for in ``$MOBILENETV2_WEIGHTS_DIR``, then in Keras's own cache (``$KERAS_HOME/models``, by
default ``~/.keras/models``), so weights Keras already downloaded are used as they are.  Missing
files are downloaded into Keras's cache with urllib.

Environment:
  MOBILENETV2_WEIGHTS_DIR   a folder searched first (several may be joined with os.pathsep)
  MOBILENETV2_WEIGHTS_URL   the base URL to download from (a mirror; file:// works too)
  MOBILENETV2_NO_DOWNLOAD   set to 1 to make a missing file an error instead of a download
  KERAS_HOME                Keras's folder, as Keras reads it
"""
import functools
import hashlib
import importlib.resources
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

ENV_DIR = "MOBILENETV2_WEIGHTS_DIR"
ENV_URL = "MOBILENETV2_WEIGHTS_URL"
ENV_NO_DOWNLOAD = "MOBILENETV2_NO_DOWNLOAD"
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A weights download that failed or delivered the wrong bytes (nothing is left behind)."""


@functools.lru_cache(maxsize=None)
def _table():
    text = importlib.resources.files("mobilenetv2._registry").joinpath("registry.json").read_text()
    return json.loads(text)


def variants():
    """Every official weights file: dicts with alpha, rows, include_top, file, size, sha256, url."""
    return [dict(v, url=_base_url() + v["file"]) for v in _table()["variants"]]


def _entry(alpha, rows, include_top):
    try:
        key = (float(alpha), int(rows), bool(include_top))
    except (TypeError, ValueError):
        key = None
    for v in _table()["variants"]:
        if (v["alpha"], v["rows"], v["include_top"]) == key:
            return v
    pairs = sorted({(v["alpha"], v["rows"]) for v in _table()["variants"]})
    same_alpha = [r for a, r in pairs if key and a == key[0]]
    hint = f" (alpha={key[0]} has rows {', '.join(map(str, same_alpha))})" if same_alpha else ""
    raise ValueError(f"no official MobileNetV2 weights for alpha={alpha!r}, rows={rows!r}{hint}; "
                     "the 22 variants (alpha, rows) are: " + ", ".join(f"({a}, {r})" for a, r in pairs))


def weights_filename(alpha, rows, include_top=True):
    """Keras's file name, e.g. 'mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5'."""
    return _entry(alpha, rows, include_top)["file"]


def _base_url():
    base = os.environ.get(ENV_URL) or _table()["base_url"]
    return base if base.endswith("/") else base + "/"


def weights_url(alpha, rows, include_top=True):
    """Where the file is downloaded from ($MOBILENETV2_WEIGHTS_URL replaces the base)."""
    return _base_url() + weights_filename(alpha, rows, include_top)


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


def resolve(alpha, rows, include_top=True, download=True, progress=None):
    """The path of the variant's file: found in the search folders, else downloaded into
    Keras's cache.  ``progress`` shows a progress bar on stderr (None: when stderr is a tty)."""
    entry = _entry(alpha, rows, include_top)
    found = find_weights(alpha, rows, include_top)
    if found is not None:
        return found
    url = _base_url() + entry["file"]
    if not download or os.environ.get(ENV_NO_DOWNLOAD, "") not in ("", "0"):
        looked = ", ".join(str(d) for d in search_dirs())
        why = f"{ENV_NO_DOWNLOAD} is set" if download else "download=False"
        raise FileNotFoundError(
            f"MobileNetV2 weights file {entry['file']!r} not found (looked in: {looked}) and "
            f"downloading is off ({why}); download {url} into one of those folders "
            f"(or set {ENV_DIR}), or pass weights='path/to/file.h5'")
    if progress is None:
        progress = sys.stderr.isatty()
    return download_file(url, keras_cache_dir() / entry["file"], entry["size"], entry["sha256"],
                         progress)


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


def download_file(url, dest, size=None, sha256=None, progress=False):
    """Download ``url`` to ``dest`` through a temporary file in the same folder, renamed into
    place only once complete and checked (Content-Length, ``size``, ``sha256`` when known).
    On any failure or interruption the temporary file is removed and ``dest`` is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            done, digest = _fetch(url, out, size, progress)
        if size is not None and done != size:
            raise DownloadError(f"downloaded {done} bytes from {url}, the registry says the file "
                                f"has {size}: incomplete download (try again)")
        if sha256 is not None and digest != sha256:
            raise DownloadError(f"the file downloaded from {url} has SHA-256 {digest}, the registry "
                                f"says {sha256}: corrupt download or a different file")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest


def _fetch(url, out, size, progress):
    """Copy ``url`` into the open file ``out``; return (bytes written, SHA-256 hex)."""
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    digest, done = hashlib.sha256(), 0
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if length is not None and size is not None and length != size:
            raise DownloadError(f"{url} is {length} bytes, the registry says the file has {size}: "
                                "not the expected file")
        bar = _Progress(url.rsplit("/", 1)[-1], length or size) if progress else None
        try:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if bar:
                    bar.update(done)
        except (HTTPException, OSError) as exc:
            raise DownloadError(f"download of {url} broke off after {done} bytes ({exc!r})") from None
        if bar:
            bar.update(done, final=True)
    if length is not None and done != length:
        raise DownloadError(f"download of {url} broke off: got {done} of {length} bytes")
    return done, digest.hexdigest()
