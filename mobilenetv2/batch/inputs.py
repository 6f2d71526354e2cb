"""The images of a batch job: directories, glob patterns and list files, each image with a stable id.

An input is one of:
  * a directory: every file under it (recursively) whose suffix is an image suffix, sorted;
  * a glob pattern (``*``, ``?``, ``[``; ``**`` matches any depth): the files it matches, sorted;
  * a ``.txt`` or ``.lst`` file: one image path per line (blank lines and ``#`` lines ignored),
    relative paths taken from the list file's folder;
  * any other file: that image.

Each image's **root** is its directory, the glob's fixed leading folders, or the list file's folder
(a single file's root is its folder).  Its ``id`` is ``image_id(relative path)``: the first 16 hex
digits of BLAKE2b (8-byte digest) of the path relative to the root, POSIX separators, UTF-8.  So ids
do not change when the image tree moves or is read on another machine, and a rerun finds the rows
it already wrote.  Two inputs giving the same relative path would share an id: that is an error.
"""
import glob
import hashlib
import os

from mobilenetv2.errors import ArgumentError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
LIST_SUFFIXES = (".txt", ".lst")


def image_id(relative_path):
    """The stable id of an image: 16 hex digits of BLAKE2b-64 of its POSIX relative path."""
    rel = relative_path.replace(os.sep, "/")
    return hashlib.blake2b(rel.encode("utf-8"), digest_size=8).hexdigest()


def _glob_root(pattern):
    parts = []
    for part in pattern.replace(os.sep, "/").split("/"):
        if glob.has_magic(part):
            break
        parts.append(part)
    root = "/".join(parts)
    return root if root else "."


def _from_dir(root):
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield os.path.join(folder, name)


def _from_list(list_file):
    folder = os.path.dirname(list_file)
    with open(list_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line if os.path.isabs(line) else os.path.join(folder, line)


def _expand(spec):
    """(root, paths) of one input argument."""
    if glob.has_magic(spec):
        paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not paths:
            raise FileNotFoundError(2, "the glob pattern matches no file", spec)
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
