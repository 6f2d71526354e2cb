"""The images of a batch job: directories, glob patterns and list files, each image with a stable id.

An input is one of:
  * a directory: every file under it (recursively) whose suffix is an image suffix, sorted;
  * a glob pattern (``*``, ``?``, ``[``; ``**`` matches any depth) that is not an existing path:
    the files it matches, sorted;
  * a ``.txt`` or ``.lst`` file: one image path per line (blank lines and ``#`` lines ignored),
    relative paths taken from the list file's folder;
  * any other file: that image.

Each image's **root** is its directory, the glob's fixed leading folders, or the list file's folder
(a single file's root is its folder).  A file a glob reaches by several names (``**`` through a
link to a folder, even a link loop) is listed once, under its shortest name.  Its ``id`` is
``image_id(relative path)``: the first 16 hex digits of BLAKE2b (8-byte digest) of the path
relative to the root, POSIX separators, UTF-8 (a name that is not UTF-8: its bytes).  So ids do not
change when the image tree moves or is read on another machine, and a rerun finds the rows it
already wrote.  Two inputs giving the same relative path would share an id: that is an error, in
one run and across runs into one ``--out`` (see ``other_image``).
"""
import glob
import hashlib
import os
import warnings

import numpy as np

from mobilenetv2 import files
from mobilenetv2.errors import ArgumentError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
LIST_SUFFIXES = (".txt", ".lst")


def image_id(relative_path):
    """The stable id of an image: 16 hex digits of BLAKE2b-64 of its POSIX relative path (UTF-8;
    a name that is not UTF-8 hashes as the bytes the file system holds)."""
    rel = relative_path.replace(os.sep, "/")
    return hashlib.blake2b(rel.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def shown_path(path):
    """``path`` as a UTF-8 string for the ``path`` column: a name that is not UTF-8 (bytes the
    file system holds, decoded by Python as surrogates) with those bytes written ``\\xff``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _missing(value):
    """Whether a table's cell holds no value: None, or what pandas writes for one (NaN, NaT, NA)."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN and NaT differ from themselves
    except TypeError:  # pandas.NA: its truth is ambiguous
        return True


def _path_cell(n, value):
    """Row ``n``'s path as a str ('' where the cell is empty): a list or an array there is no path
    (its truth in _missing was NumPy's 'ambiguous' ValueError)."""
    if isinstance(value, (list, tuple, dict, set, np.ndarray)):
        raise ArgumentError(f"row {n} of the batch has {type(value).__name__} {str(value)[:80]} as its path: "
                            "give one path (a string) per row")
    if _missing(value):
        return ""
    return files.path_str(value) if isinstance(value, (bytes, os.PathLike)) else str(value)


def _column(batch, name):
    """Column ``name`` of a pyarrow Table, a dict of arrays or a pandas DataFrame as a list (None if absent)."""
    if isinstance(batch, dict):
        return list(batch[name]) if name in batch else None
    names = batch.column_names if hasattr(batch, "column_names") else list(batch.columns)
    if name not in names:
        return None
    col = batch[name]
    return col.to_pylist() if hasattr(col, "to_pylist") else list(col)


def given_rows(batch):
    """The (ids, paths) of a caller's rows (a Dask partition, a Ray batch: a pandas DataFrame, a pyarrow
    Table or a dict of arrays) as strings.  The ``path`` column is required; without an ``id`` column
    each id is the path's ``image_id``.  A missing path (None, NaN, pandas' NA) is '', which BatchJob
    writes as a row whose error says the path is missing; a missing id is an ArgumentError naming its
    row (an id made up for it could not be joined on)."""
    paths, ids = _column(batch, "path"), _column(batch, "id")
    if paths is None:
        raise ArgumentError("the batch has no 'path' column (the image paths to read)")
    paths = [_path_cell(n, p) for n, p in enumerate(paths)]
    if ids is None:
        return [image_id(p) for p in paths], paths
    for n, (key, path) in enumerate(zip(ids, paths)):
        if _missing(key):
            raise ArgumentError(f"row {n} of the batch (path {shown_path(path)!r}) has no id ({key!r}): give "
                                "every row an id, or leave out the id column to have each path's hash")
    return [str(key) for key in ids], paths


def other_image(path, written):
    """Why ``path`` cannot be the image whose row ``--out`` holds under the same id (written for
    the path ``written``), or None.  Ids are paths relative to the input, so a moved or copied tree
    resumes; but another input folder with the same layout (day2/img1.jpg after day1/img1.jpg)
    has the same ids too.  Where the row's file still exists and is neither this file nor a copy
    of its size, the images differ."""
    if written is None or written == shown_path(path):
        return None
    try:
        here, there = os.stat(path), os.stat(written)
    except OSError:  # the row's file is gone or elsewhere (a moved tree): nothing to compare
        return None
    if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino) or here.st_size == there.st_size:
        return None
    return (f"{path!r} ({here.st_size} bytes) has the id of the row written for {written!r} "
            f"({there.st_size} bytes): the same path relative to its input, another image")


def _glob_root(pattern):
    parts = []
    for part in pattern.replace(os.sep, "/").split("/"):
        if glob.has_magic(part):
            break
        parts.append(part)
    root = "/".join(parts)
    if not root and pattern.startswith(("/", os.sep)):  # '/*/photos/*.jpg': the file system's root,
        return "/"                                      # not the current folder
    return root if root else "."


def _from_dir(root):
    """The image files under ``root``, depth first: a folder's files (sorted), then its subfolders
    in sorted order.  Symbolic links to folders are not entered (a link to a file is a file, a link
    loop named like an image is listed: its row says why it cannot be read); an unreadable folder is
    passed over with a warning naming it.  A stack, not recursion: any depth the OS allows."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            warnings.warn(f"folder {shown_path(folder)!r} cannot be listed ({exc.strerror or exc}): "
                          "its images are left out", stacklevel=2)
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link loop (ELOOP): not a folder to enter
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    subfolders.append(entry.path)
            elif entry.name.lower().endswith(IMAGE_SUFFIXES):
                yield os.path.join(folder, entry.name)
        stack.extend(reversed(subfolders))


def _from_list(list_file):
    """Paths, one a line; bytes that are not UTF-8 are kept as the file system's (surrogates),
    so a list written in another encoding names the files it lists on a byte-named file system.
    A UTF-8 byte order mark (Windows Notepad writes one) is no part of the first path."""
    folder = os.path.dirname(list_file)
    with open(list_file, encoding="utf-8-sig", errors="surrogateescape") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line if os.path.isabs(line) else os.path.join(folder, line)


def _expand(spec):
    """(root, paths) of one input argument (an existing folder or file is itself, whatever its name:
    'Trip [2019]' is not a pattern matching 'Trip 2')."""
    if glob.has_magic(spec) and not os.path.exists(spec):
        try:
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        except RecursionError:
            raise ArgumentError(f"glob pattern {spec!r} goes through folders nested too deep to walk; "
                                "give the folder itself instead") from None
        paths, seen = [], set()
        for p in sorted(matches, key=lambda p: (p.count(os.sep), p)):  # ** follows links to folders:
            real = os.path.realpath(p)                                  # a loop names a file many times
            if real not in seen:
                seen.add(real)
                paths.append(p)
        paths.sort()
        if not paths:
            raise FileNotFoundError(2, "the glob pattern matches no file (in a pattern, a name's own *, ? or [ "
                                       "is written [*], [?] or [[])", spec)
        return _glob_root(spec), paths
    if os.path.isdir(spec):
        return spec, list(_from_dir(spec))
    if os.path.isfile(spec):
        folder = os.path.dirname(spec) or "."
        if spec.lower().endswith(LIST_SUFFIXES):
            return folder, list(_from_list(spec))
        return folder, [spec]
    raise FileNotFoundError(2, "input is not a directory, a glob pattern, a .txt list of images or a file", spec)


def list_images(specs):
    """[(id, path)] of every image of the inputs, in input order; a ValueError if two share an id."""
    items, seen = [], {}
    for spec in specs:
        root, paths = _expand(os.fspath(spec))
        for path in paths:
            rel = os.path.relpath(path, root)
            key = image_id(rel)
            if key in seen:
                raise ArgumentError(f"{seen[key]!r} and {path!r} have the same path relative to their input "
                                    f"folders ({rel!r}), so they would get the same id: list each image once, "
                                    "and run inputs with the same layout as separate jobs (separate --out)")
            seen[key] = path
            items.append((key, path))
    if not items:
        raise ArgumentError(f"no image files found in {', '.join(map(repr, map(os.fspath, specs)))} "
                            f"(image suffixes: {' '.join(IMAGE_SUFFIXES)})")
    return items
