"""Shared test fixtures: where ../shared is, and models with the deterministic synthetic weights.

The shared folder (real weights, photos, Keras reference outputs) sits beside the checkout, or
where $MOBILENETV2_SHARED points.  Tests that need it skip with a reason when it is absent.
"""
import functools
import importlib.util
import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def find_shared():
    env = os.environ.get("MOBILENETV2_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


def require_shared(*parts):
    """The path of a file under the shared folder, or skip the test saying what is missing."""
    shared = find_shared()
    if shared is None:
        pytest.skip("the shared test data folder is absent (set MOBILENETV2_SHARED or put it at ../shared)")
    path = shared.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent from the shared test data folder")
    return path


@pytest.fixture
def shared_dir():
    return require_shared()


@functools.lru_cache(maxsize=None)
def synthetic_weight_fn():
    """``synthetic_weight(layer, weight, shape)`` from shared/tools/synthetic_weights.py."""
    path = require_shared("tools", "synthetic_weights.py")
    spec = importlib.util.spec_from_file_location("synthetic_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_weight


def set_synthetic_weights(model):
    """Give every weighted layer of ``model`` the synthetic weights Keras's reference used."""
    fn = synthetic_weight_fn()
    for layer in model.weighted_layers():
        layer.set_weights([fn(layer.name, wname, shape)
                           for wname, shape in zip(layer.weight_names, layer.weight_shapes())],
                          model.dtype)
    return model


def keras3(why):
    """Keras 3 (on JAX where no backend is set), or skip saying ``why`` it was needed."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason=f"{why} needs Keras 3 (not a test extra)")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip(f"{why} needs Keras 3, found {keras.__version__}")
    return keras


@functools.lru_cache(maxsize=None)
def keras_reference(name):
    """A reference .npz from shared/reference, loaded once."""
    import numpy as np
    return np.load(require_shared("reference", name))


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz_long: the long fuzz profile of tests/fuzz (or MNV2_FUZZ_PROFILE=long)")
    config.addinivalue_line(
        "markers", "engine_independent: the code under test runs the same with or without the C extension "
        "(compare, whose reference is the NumPy engine in float64 and float32 either way; the weights "
        "registry and downloads; the loaders' refusals; the build): .ci/no-ext leaves it out, as the "
        "main suite runs it")


# Hypothesis: derandomised on CI (CI=true, as CI services set it), so a red run replays exactly;
# HYPOTHESIS_PROFILE picks a profile by name anywhere.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # hypothesis is a test extra; the tests that use it import it themselves
    _hypothesis_settings = None
if _hypothesis_settings is not None:
    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                                          print_blob=True)
    _hypothesis_settings.register_profile("dev", deadline=None)
    _profile = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else None)
    if _profile:
        _hypothesis_settings.load_profile(_profile)


def cli_error_lines(err):
    """The lines of a CLI call's stderr less the warning that the C extension is missing: the package
    gives it once a process, on the first model built, so it is in the stderr of whichever test
    builds the first one when the tests run without the extension (as .ci/no-ext runs them),
    alone or first."""
    return [line for line in err.splitlines()
            if not (line.startswith("mobilenetv2: warning: ") and "the C extension is not available" in line)]


def one_line(err):
    """The one line of a CLI failure: ``err`` is its stderr, or the finished subprocess (whose exit
    status must then be 2).  Besides that line only the missing-C-extension warning
    (cli_error_lines) may be there; any other warning, or a traceback, fails the test."""
    if not isinstance(err, str):
        assert err.returncode == 2, err
        err = err.stderr
    lines = cli_error_lines(err.strip("\n"))
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def same_values(got, want):
    """Whether a batch run's values equal the model run image by image: bit for bit on the C core
    (its results do not depend on the batch a value was computed in), to float32 rounding on the
    NumPy engine (its BLAS matmuls round differently for different batch sizes; through the
    network's 50-odd layers, 0.35_96's top probabilities moved by 2.2e-5 relative between one
    image at a time and the batch command's batches with NumPy 2.4.6's OpenBLAS on an Intel Xeon
    with AVX-512)."""
    import numpy as np
    from mobilenetv2.engines import native
    if got is None or want is None:  # a row with an error has no values
        return got is None and want is None
    got, want = np.asarray(got), np.asarray(want)
    if native.available():
        return np.array_equal(got, want)
    return got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-6)


# Models the exporters are checked on (tests/test_onnx_export.py, tests/test_tflite_export.py):
# (input shape, alpha, MobileNetV2 keywords): heads with and without softmax, both poolings, odd
# and non-square sizes, alpha 0.35's 8-channel layers.
EXPORT_CASES = [
    ((96, 96, 3), 0.35, dict()),
    ((96, 96, 3), 0.35, dict(classifier_activation=None)),
    ((97, 113, 3), 0.5, dict(include_top=False, pooling="avg")),
    ((97, 113, 3), 0.35, dict(include_top=False, pooling="max")),
    ((33, 40, 3), 0.35, dict(include_top=False)),
]



def tflite_edit(data, edit):
    """``data`` (a .tflite file's bytes) rewritten through the TFLite schema code LiteRT ships:
    ``edit(model, its main graph, the schema module)`` changes the unpacked model in place."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    edit(m, m.subgraphs[0], schema)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def tflite_float16(which=lambda k: True):
    """An edit for ``tflite_edit``: each float32 weight and bias of the ``which(k)``-th conv or dense
    op (k from 0) stored as TensorFlow's float16 quantization stores it: a FLOAT16 constant (the
    float32 values rounded to nearest), a DEQUANTIZE op to the float32 tensor the op reads (which
    then has no data, buffer 0), the DEQUANTIZE ops ahead of the others."""
    import numpy as np

    def edit(m, g, s):
        weighted = (s.BuiltinOperator.CONV_2D, s.BuiltinOperator.DEPTHWISE_CONV_2D, s.BuiltinOperator.FULLY_CONNECTED)
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.DEQUANTIZE
        code.version = 3  # (DEQUANTIZE of float16)
        m.operatorCodes.append(code)
        ops = [op for op in g.operators if m.operatorCodes[op.opcodeIndex].builtinCode in weighted]
        dequantize = []
        for op in (op for k, op in enumerate(ops) if which(k)):
            for i in op.inputs[1:3]:
                t = g.tensors[i] if i >= 0 else None
                if t is None or t.type != s.TensorType.FLOAT32 or not t.buffer:
                    continue
                half = s.BufferT()
                half.data = np.frombuffer(bytes(m.buffers[t.buffer].data), np.float32).astype(np.float16).view(np.uint8)
                m.buffers.append(half)
                h = s.TensorT()
                h.name, h.shape, h.type, h.buffer = t.name + b"_fp16", list(t.shape), s.TensorType.FLOAT16, len(m.buffers) - 1
                g.tensors.append(h)
                d = s.OperatorT()
                d.opcodeIndex, d.inputs, d.outputs = len(m.operatorCodes) - 1, [len(g.tensors) - 1], [i]
                dequantize.append(d)
                t.buffer = 0
        g.operators[:0] = dequantize
    return edit


def fail_after(seconds, what):
    """Fixture body: a test that blocks in Python (a FIFO opened for reading, a parser that never
    returns) raises TimeoutError(what) after ``seconds`` instead of hanging the run."""
    def expire(*_):
        raise TimeoutError(what)
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
