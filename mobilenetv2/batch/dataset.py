"""The --out folder of a batch job: a Parquet dataset that a killed run can resume.

Layout (any Parquet reader takes the folder as one dataset, e.g. ``pyarrow.dataset.dataset(out)``
or ``pandas.read_parquet(out)``):

  _mobilenetv2.json        the job's configuration (model, layer, dtype, weights' sha256); a rerun
                           with another configuration is refused instead of mixing rows
  part-<run>-<n>.parquet   the rows, one row group per batch; each file is written as .tmp-*, synced,
                           then renamed, so a file with this name is always complete
  .lock                    held (flock) by the run writing here: a second run on the same folder is refused
                           (a file system without locks: a warning)
  .tmp-*                   a part being written (a folder with --ray: Ray's files, moved in as parts
                           when the Ray job ends); a killed run leaves one, the next run deletes it

A folder that exists must be one this command wrote (it has ``_mobilenetv2.json``) or be empty:
another folder is refused, so that no file of someone else's is deleted or mixed into the dataset.

On a rerun, the ids in the part files are done (rows with an error included: ``--overwrite`` redoes
everything) and only the other images are processed.
"""
import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings

from mobilenetv2.batch import require
from mobilenetv2.errors import ArgumentError
from mobilenetv2.files import current_umask

MANIFEST = "_mobilenetv2.json"
LOCK = ".lock"
PART_PREFIX = "part-"
TMP_PREFIX = ".tmp-"


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory fds (Windows): rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(lock_path, shown):
    """Hold an exclusive lock on ``lock_path`` for the life of the returned file (POSIX; elsewhere none)."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(lock_path, "a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ArgumentError(f"another run is writing to --out {shown!r}; wait for it or choose another --out") from None
    except OSError as exc:  # ENOLCK: an NFS mount without its lock daemon; not another run
        warnings.warn(f"--out {shown!r} cannot be locked ({exc.strerror or exc}): make sure no other run "
                      "writes there at the same time", stacklevel=3)
    return f


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _write_json_atomically(path, obj):
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600: a shared dataset is read by others
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class OutputDataset:
    """The --out folder for a job whose ``config()`` is ``config``; created if absent."""

    def __init__(self, path, config, overwrite=False):
        self.path = os.path.abspath(os.fspath(path))
        self.config = config
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ArgumentError(f"--out {path!r} exists and is not a folder (the output is a folder of Parquet parts)")
        os.makedirs(self.path, exist_ok=True)
        self._check_ours(path)
        self._lock = _lock(os.path.join(self.path, LOCK), path)
        self.run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
        self._seq = 0
        manifest = os.path.join(self.path, MANIFEST)
        for name in os.listdir(self.path):
            if name.startswith(TMP_PREFIX) or (overwrite and self._is_part(name)):
                _remove(os.path.join(self.path, name))  # a killed run's temporaries, or --overwrite
        if overwrite and os.path.exists(manifest):
            os.unlink(manifest)  # last: a killed --overwrite leaves a folder that is still this command's
        if os.path.exists(manifest):
            with open(manifest, encoding="utf-8") as f:
                try:
                    old = json.load(f)
                except ValueError:
                    raise ArgumentError(f"{manifest!r} is not valid JSON; use --overwrite to start over") from None
            if not isinstance(old, dict):
                raise ArgumentError(f"{manifest!r} holds {type(old).__name__}, not a configuration; use "
                                    "--overwrite to start over")
            if old != config and not self.parts():
                # no rows yet (a run refused or stopped before its first part): nothing to mix up
                _write_json_atomically(manifest, config)
            elif old != config:
                diff = ", ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now"
                                 for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k))
                raise ArgumentError(f"--out {path!r} holds results of another configuration ({diff}); "
                                    "use --overwrite to replace them or choose another --out")
        else:
            _write_json_atomically(manifest, config)

    def _check_ours(self, shown):
        """Refuse a folder this command did not make: one without MANIFEST holding anything but what a
        run leaves before writing MANIFEST (LOCK, a ``.tmp-*.json``) or other hidden files (which
        Parquet readers pass over, as this does).  Its ``.tmp-*`` entries would be
        deleted, ``--overwrite`` would delete its ``part-*.parquet`` (a Spark dataset's names), and its
        files would make the dataset unreadable."""
        names = os.listdir(self.path)
        if MANIFEST in names:
            return
        others = sorted(n for n in names if not n.startswith(".")  # LOCK, a Finder's .DS_Store: not read
                        or (n.startswith(TMP_PREFIX) and not n.endswith(".json")))
        if others:
            raise ArgumentError(f"--out {shown!r} is not empty and has no {MANIFEST}: it is not an output "
                                f"folder of this command (it holds {others[0]!r}"
                                f"{f' and {len(others) - 1} more' if len(others) > 1 else ''}); "
                                "choose a new or empty folder")

    @staticmethod
    def _is_part(name):
        return name.startswith(PART_PREFIX) and name.endswith(".parquet")

    def close(self):
        """Release the folder for another run (also done when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def parts(self):
        return sorted(os.path.join(self.path, n) for n in os.listdir(self.path) if self._is_part(n))

    def done_ids(self):
        """The ids already written, each with the path its row was written for ({id: path}).  Every
        part must hold rows of this folder's configuration (its schema's metadata says which)."""
        pq = require("pyarrow.parquet", "batch")
        done = {}
        for part in self.parts():
            try:
                meta = pq.read_schema(part).metadata or {}
                written = json.loads(meta[b"mobilenetv2"]) if b"mobilenetv2" in meta else None
                table = pq.read_table(part, columns=["id", "path"])
            except Exception as exc:
                raise ArgumentError(f"part file {part!r} cannot be read ({exc}); delete it to redo its "
                                    "images, or use --overwrite") from None
            if written != self.config:
                raise ArgumentError(f"part file {part!r} holds rows of another configuration than "
                                    f"{MANIFEST} ({json.dumps(written)[:200]}): move it out, or use --overwrite")
            done.update(zip(table.column("id").to_pylist(), table.column("path").to_pylist()))
        return done

    def new_part_name(self, tag=""):
        self._seq += 1
        return os.path.join(self.path, f"{PART_PREFIX}{self.run_id}{tag}-{self._seq:06d}.parquet")

    def part_writer(self, schema):
        return _PartWriter(self, schema)

    def adopt(self, files, tag="-ray"):
        """Move finished Parquet files (written elsewhere on this file system) in as parts."""
        for f in sorted(files):
            os.replace(f, self.new_part_name(tag))
        _fsync_dir(self.path)


class PartFile:
    """Batches written as row groups of a temporary file in ``folder``; ``publish(final)`` syncs it and
    renames it to ``final`` (an existing file of that name is replaced, atomically), ``abort()``
    deletes it.  Memory: one batch at a time."""

    def __init__(self, folder, schema):
        self.folder, self.schema = folder, schema
        self.rows, self._writer, self._tmp = 0, None, None

    def write(self, table):
        pq = require("pyarrow.parquet", "batch")
        if self._writer is None:
            fd, self._tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".parquet", dir=self.folder)
            os.close(fd)
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows

    def publish(self, final):
        """Close the file and rename it to ``final``; returns ``final`` (None if nothing was written)."""
        if self._writer is None:
            return None
        self._writer.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(self._tmp, 0o666 & ~current_umask())  # as open(path, 'w') would give, not mkstemp's 0600
        os.replace(self._tmp, final)
        _fsync_dir(os.path.dirname(final))
        self._writer, self._tmp, self.rows = None, None, 0
        return final

    def abort(self):
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                with contextlib.suppress(FileNotFoundError):  # published already (interrupted after the rename)
                    os.unlink(self._tmp)
                self._writer, self._tmp, self.rows = None, None, 0


class _PartWriter(PartFile):
    """A PartFile in the dataset's folder; ``commit()`` publishes it under the next part name."""

    def __init__(self, dataset, schema):
        super().__init__(dataset.path, schema)
        self.dataset = dataset

    def commit(self):
        """Close the file and rename it to its part name; returns that name (None if empty)."""
        if self._writer is None:
            return None
        return self.publish(self.dataset.new_part_name())
