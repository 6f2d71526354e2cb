"""What a batch job computes, the same on every engine (the local stream, Ray actors, Dask workers).

``BatchJob(kind, ...)`` builds the model once (``replicas(n)``: n jobs over its one weight set, to
run in threads); ``decode(paths)`` reads a batch of images (a bad image becomes an error message for
its row, never an exception); ``infer(x)`` runs the model; ``table(...)`` lays the rows out in the
one Arrow schema of every engine:

  id      string   the stable id (see mobilenetv2.batch.inputs)
  path    string   the image path as listed
  features  fixed_size_list<float32|float64>[D]   (features) the layer's output, flattened (C order;
            the field metadata 'shape' gives its (H, W, C)); null where the image failed
  classes fixed_size_list<int32>[K], scores fixed_size_list<float32|float64>[K]   (predict) the top K,
            best first (ties: lower class index first); with a 1000-class head also
            wnids and names (fixed_size_list<string>[K]); null where the image failed
  error   string   null, or why the image could not be read

float64 and a ``layer`` other than the pooled output (both run on the NumPy layers, whose BLAS
products depend on the batch's size) run each image on its own, so their outputs do not depend on
which images share its batch (the float32 C engine gives bit-identical rows for any batch already):
a resumed or distributed run writes exactly the values of an uninterrupted one.
"""
import contextlib
import copy
import hashlib
import json
import os

import numpy as np

from mobilenetv2 import files
from mobilenetv2.batch import require
from mobilenetv2.errors import ArgumentError, check_option, is_whole

KINDS = ("features", "predict")
FORMAT_VERSION = 1


def _positive_int(name, value):
    if not is_whole(value) or value < 1:
        raise ArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(exc):
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {text}"


def blas_single_threaded():
    """A context in which BLAS runs one thread (a no-op where threadpoolctl is not installed): every
    engine parallelizes over replicas, actors or workers, and OpenBLAS's own threads spinning at
    their barriers on the NumPy engine's small matmuls cost far more than they give."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class BatchJob:
    """One configuration of the model and of the rows it writes.

    kind: 'features' (the pooled features, or ``layer``'s output) or 'predict' (top ``top`` classes).
    weights: 'imagenet', None / 'none' (Keras's deterministic initial weights) or a Keras .h5 path.
    threads: the C engine's threads (None: the model's default).
    """

    def __init__(self, kind="features", alpha=1.0, size=224, weights="imagenet", layer=None, top=5,
                 dtype="float32", threads=None):
        from mobilenetv2.network import arch
        from mobilenetv2.model import MobileNetV2
        self.kind = check_option(kind, KINDS, f"kind must be one of {KINDS}")
        self.size = _positive_int("size", size)
        if not (weights is None or isinstance(weights, (str, bytes, os.PathLike))):
            raise ArgumentError(f"weights must be 'imagenet', None / 'none' or a Keras .h5 path, got {weights!r}")
        weights = None if weights in (None, "none") else weights
        self.weights = weights if weights in (None, "imagenet") else files.path_str(weights)
        include_top = kind == "predict"
        if include_top and layer is not None:
            raise ArgumentError("--layer is for features; predict writes the top classes")
        self.model = MobileNetV2((self.size, self.size, 3), alpha=alpha, include_top=include_top,
                                 weights=self.weights, pooling=None if include_top else "avg",
                                 dtype=dtype, threads=threads)
        self.dtype = self.model.dtype
        last = self.model.layers[-1].name
        if include_top:
            self.top = _positive_int("top", top)
            if self.top > self.model.classes:
                raise ArgumentError(f"top must be at most the {self.model.classes} classes, got {top}")
            self.layer, self.shape = None, (self.model.classes,)
        else:
            self.top = None
            self.layer = last if layer is None else layer
            self.model.get_layer(self.layer)  # a ValueError naming the layer if it does not exist
            if self.layer == self.model.layers[0].name:
                raise ArgumentError(f"{self.layer!r} is the input itself, not an activation")
            self.shape = tuple(int(d) for d in arch.output_shapes(self.model.layers, self.model.input_shape)[self.layer])
        self.width = int(np.prod(self.shape))
        file = weights not in (None, "imagenet")
        self._config = {"format": FORMAT_VERSION, "kind": self.kind, "alpha": self.model.alpha, "size": self.size,
                        "weights": os.path.basename(self.weights) if file else weights,
                        "weights_sha256": _file_sha256(self.weights) if file else None,
                        "layer": self.layer, "shape": list(self.shape), "top": self.top, "dtype": self.dtype.name}
        self._schema = None

    def config(self):
        """What makes two runs' rows the same: a rerun into the same --out must match it."""
        return dict(self._config)

    # -- the three steps -------------------------------------------------------------------
    def decode(self, paths):
        """(x, ok, errors): the readable images as one preprocessed batch (None if none), their
        positions in ``paths``, and {position: message} for the others."""
        return self.assemble([self.load(path) for path in paths])

    def load(self, path):
        """One image as (size, size, 3) uint8, or the message saying why it cannot be read."""
        from mobilenetv2.processing.preprocessing import load_image
        if path == "":  # a missing path of a caller's table (see inputs.given_rows)
            return "the path is missing (an empty, None or NaN value in the path column)"
        try:
            return load_image(path, target_size=(self.size, self.size))
        except Exception as exc:  # a stranger's file: any failure is that row's error, not the run's
            return _describe(exc)

    def assemble(self, loaded):
        """``decode``'s result from the ``load`` results of a batch's images."""
        from mobilenetv2.processing.preprocessing import preprocess_input
        ok = [i for i, v in enumerate(loaded) if not isinstance(v, str)]
        errors = {i: v for i, v in enumerate(loaded) if isinstance(v, str)}
        x = preprocess_input(np.stack([loaded[i] for i in ok]).astype(self.dtype)) if ok else None
        return x, ok, errors

    def _pooled(self):
        """Whether the rows are the model's last output (predict, the C plan in float32); else
        ``layer``'s output, from the NumPy layers."""
        return self.layer is None or self.layer == self.model.layers[-1].name

    def _one_by_one(self):
        """Whether ``infer`` runs the NumPy layers, one image a call (float64, or a layer other than
        the pooled output), so that an image's row is the same in any batch."""
        return self.dtype == np.float64 or not self._pooled()

    def memory_bytes(self, batch_size):
        """Bytes one replica holds at least while it runs a batch of ``batch_size`` images: the batch
        decoded and as floats, the activations of a run (of one image where the NumPy layers run them
        one by one) and the outputs.  Its weights are apart: ``weights_bytes()``, ``packed_bytes()``."""
        from mobilenetv2.network import arch
        batch_size = _positive_int("batch_size", batch_size)
        pixels = self.size * self.size * 3
        run = 1 if self._one_by_one() else batch_size
        wanted = None if self._pooled() else [self.layer]
        activations = run * arch.run_values(self.model.layers, (self.size, self.size, 3), wanted)
        return batch_size * pixels + self.dtype.itemsize * (batch_size * (pixels + self.width) + activations)

    def weights_bytes(self):
        """Bytes of the model's weights, as loaded.  The local engine's replicas (``replicas``) share
        one set; each Ray actor and each Dask worker is a process of its own and holds its own."""
        return self.model.count_params() * self.dtype.itemsize

    def _packs(self):
        """Whether ``infer`` runs the C plan, which packs the weights into its own layout on its
        first run (float32, the pooled output, the C extension built)."""
        from mobilenetv2.engines import native
        return not self._one_by_one() and native.available() and self.model.engine != "numpy"

    def packed_bytes(self):
        """Bytes of the C plan's packed form of the weights, made on the job's first batch and shared
        by its replicas (0 where the NumPy layers run the job): counted as the float32 weights' size,
        which it is within 4 % (batch norms folded into biases, panels padded)."""
        return self.model.count_params() * 4 if self._packs() else 0

    def replicas(self, count):
        """This job and ``count - 1`` others of its configuration, to run batches side by side in
        threads: each around a ``copy.copy`` of this job's model, a model of its own (layers, lock,
        C plans and their buffers, caches, C threads) over the same read-only weight arrays and the
        same packed C form of them, so that the ``count`` replicas hold one weight set, loaded and
        packed once.  Where the C plan runs the job, this model first runs one image of zeros, which
        packs the weights: a copy shares only what its original has packed, and would pack the rest
        into memory of its own.  Each replica runs in a thread: at most ``pool.max_threads()``."""
        from mobilenetv2.engines import pool
        count = _positive_int("count", count)
        if count > pool.max_threads():
            raise ArgumentError(f"{count} replicas, each running in a thread of its own, are more than the "
                                f"{pool.max_threads()} threads a model may start here (4 per usable core, at "
                                "least 64): use fewer workers")
        if count > 1 and self._packs():
            self.infer(np.zeros((1, self.size, self.size, 3), self.dtype))
        jobs = [self]
        for _ in range(count - 1):
            twin = copy.copy(self)  # the settings, the configuration and the schema are only read
            twin.model = copy.copy(self.model)
            jobs.append(twin)
        return jobs

    def infer(self, x):
        """The outputs for a decoded batch, one row per image: (N, D); (0, D) for x None."""
        if x is None:
            return np.zeros((0, self.width), self.dtype)
        pooled = self._pooled()
        if self._one_by_one() and len(x) > 1:  # the NumPy layers: one image a call
            return np.concatenate([self.infer(x[i:i + 1]) for i in range(len(x))])
        if pooled:
            y = self.model.predict(x, batch_size=len(x))
        else:
            y = self.model.features(x, [self.layer])[self.layer]
        return y.reshape(len(x), -1)

    def run(self, ids, paths):
        """decode -> infer -> table for one batch of (ids, paths)."""
        x, ok, errors = self.decode(paths)
        return self.table(ids, paths, self.infer(x), ok, errors)

    # -- the rows --------------------------------------------------------------------------
    def schema(self):
        """The Arrow schema of the rows (built once)."""
        if self._schema is None:
            self._schema = self._make_schema()
        return self._schema

    def _make_schema(self):
        pa = require("pyarrow", "batch")
        value = pa.float64() if self.dtype == np.float64 else pa.float32()
        fields = [pa.field("id", pa.string(), nullable=False), pa.field("path", pa.string(), nullable=False)]
        if self.kind == "features":
            fields.append(pa.field("features", pa.list_(value, self.width),
                                   metadata={"shape": json.dumps(list(self.shape)), "layer": self.layer}))
        else:
            fields += [pa.field("classes", pa.list_(pa.int32(), self.top)), pa.field("scores", pa.list_(value, self.top))]
            if self.model.classes == 1000:
                fields += [pa.field("wnids", pa.list_(pa.string(), self.top)),
                           pa.field("names", pa.list_(pa.string(), self.top))]
        fields.append(pa.field("error", pa.string()))
        return pa.schema(fields, metadata={"mobilenetv2": json.dumps(self.config())})

    def table(self, ids, paths, y, ok, errors):
        """The rows of one batch: ``y`` holds the outputs of the images at positions ``ok``."""
        pa = require("pyarrow", "batch")
        n = len(paths)
        null = np.ones(n, dtype=bool)
        null[list(ok)] = False
        mask = pa.array(null)

        def fixed(values, width, typ):
            full = np.full((n, width), "" if values.dtype == object else 0, dtype=values.dtype)
            full[list(ok)] = values
            return pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1), type=typ), width, mask=mask)

        schema = self.schema()
        from mobilenetv2.batch.inputs import shown_path
        columns = [pa.array([str(i) for i in ids], pa.string()),
                   pa.array([shown_path(str(p)) for p in paths], pa.string())]
        if self.kind == "features":
            columns.append(fixed(y, self.width, schema.field("features").type.value_type))
        else:
            best = np.argsort(-y, axis=1, kind="stable")[:, :self.top]
            columns += [fixed(best.astype(np.int32), self.top, pa.int32()),
                        fixed(np.take_along_axis(y, best, axis=1), self.top, schema.field("scores").type.value_type)]
            if self.model.classes == 1000:
                from mobilenetv2.processing.imagenet import class_table
                wnids, names = (np.array(col, dtype=object) for col in zip(*class_table()))
                columns += [fixed(wnids[best], self.top, pa.string()), fixed(names[best], self.top, pa.string())]
        columns.append(pa.array([errors.get(i) for i in range(n)], pa.string()))
        return pa.Table.from_arrays(columns, schema=schema)
