"""Hostile files given to ``compare``: each case is a healthy OTHER (the package's own ONNX,
TFLite and OpenVINO exports of a headless 0.35 model at 32x32, a dump, a batch, a mapping) with one
defect built in here, and the truth is that compare refuses it with a CompareError naming the file
and the defect: never another exception, a crash, a wait, an allocation of what a header claims,
or a report that agrees.  Each was a foreign exception, a crash, a hang or a wrong answer before
(the message in each case's comment).  Random damage of every format is tests/fuzz's (kinds onnx,
tflite, openvino, compare); truncations and bit flips are hypothesis's here."""
import io
import os
import re
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

from conftest import fail_after, tflite_edit
from mobilenetv2 import MobileNetV2
from mobilenetv2.cli import main
from mobilenetv2.tools.compare import CompareError, compare
from mobilenetv2.tools.compare.inputs import MAX_IMAGES
from mobilenetv2.tools.compare.metrics import layer_row

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


@pytest.fixture(autouse=True)
def no_hang():
    """A test that blocks in Python fails after 60 s instead of hanging (one that can block in a
    runtime's C++ runs compare in a child process with a timeout)."""
    yield from fail_after(60, "compare did not answer in 60 s")


@pytest.fixture(scope="module")
def backbone():
    return MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)


@pytest.fixture(scope="module")
def onnx_bytes(backbone, tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mobilenetv2.tools.onnx_export import export_onnx
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(backbone, path, batch=1)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tflite_bytes(backbone, tmp_path_factory):
    pytest.importorskip("ai_edge_litert")
    from mobilenetv2.tools.tflite_export import export_tflite
    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    export_tflite(backbone, path, batch=1)
    return path.read_bytes()


def _refused(path, says, **kw):
    """compare(path) raises a CompareError naming the file and saying ``says``."""
    with pytest.raises(CompareError) as info:
        compare(str(path), **kw)
    text = str(info.value)
    assert os.path.basename(str(path)) in text and re.search(says, text), text
    return text


# -- ONNX ---------------------------------------------------------------------------------------------
def _onnx_edit(onnx_bytes, edit):
    import onnx
    m = onnx.load_model_from_string(onnx_bytes)
    edit(m.graph)
    return m.SerializeToString()


def _weight(g):
    conv = next(n for n in g.node if n.op_type == "Conv")
    return next(t for t in g.initializer if t.name == conv.input[1])


def _drop_inputs(op, keep, name=None):
    def edit(g):
        node = next(n for n in g.node if n.op_type == op)
        del node.input[keep:]
        if name:
            node.name = name
    return edit


def _attribute(op, name, value):
    def edit(g):
        from onnx import helper
        node = next(n for n in g.node if n.op_type == op)
        node.attribute.remove(next(a for a in node.attribute if a.name == name))
        node.attribute.append(helper.make_attribute(name, value))
    return edit


def _set(fn):
    def edit(g):
        fn(g)
    return edit


def _identity_of_nothing(g):
    from onnx import helper
    g.node.insert(0, helper.make_node("Identity", [], ["nothing"]))


def _add_of_one(g):
    next(n for n in g.node if n.op_type == "Add").input[1] = ""


def _batch_norm_of_one(g):
    from onnx import helper
    g.node.insert(1, helper.make_node("BatchNormalization", [g.node[0].output[0]], ["bn"]))


def _many_relus(g):
    from onnx import helper
    last = g.output[0].name
    for i in range(30000):
        g.node.append(helper.make_node("Relu", [last], [f"r{i}"]))
        last = f"r{i}"


def _nan_weight(g):
    from onnx import numpy_helper
    t = _weight(g)
    a = numpy_helper.to_array(t).copy()
    a.flat[5] = np.nan
    t.CopyFrom(numpy_helper.from_array(a, t.name))


@pytest.mark.parametrize("edit, says", [
    # numpy_helper's ValueError 'cannot reshape array of size 432 into shape (1099511627776,3,3,3)'
    (_set(lambda g: _weight(g).dims.__setitem__(0, 1 << 40)), r"declares dims \[1099511627776, 3, 3, 3\].*stores 1728 bytes"),
    (_set(lambda g: _weight(g).dims.__setitem__(0, -5)), r"declares dims \[-5, 3, 3, 3\]"),
    # 'buffer size must be a multiple of element size'; 'cannot reshape array of size 1456'
    (_set(lambda g: setattr(_weight(g), "raw_data", _weight(g).raw_data[:10])), "stores 10 bytes"),
    (_set(lambda g: setattr(_weight(g), "raw_data", _weight(g).raw_data + bytes(4096))), "cannot be read"),
    # IndexError: list index out of range (a Conv, a Gemm-less head's Identity without inputs)
    (_drop_inputs("Conv", 1, name="stem/conv"), r"node 'stem/conv' \(Conv\) has inputs \['nchw'\].* its op does not take"),
    (_identity_of_nothing, r"node 'Identity' \(Identity\) has inputs \[\]"),  # a node without a name
    # RuntimeError: generator raised StopIteration; ValueError: not enough values to unpack
    (_add_of_one, r"\(Add\) has inputs \[.*, ''\]"),
    (_batch_norm_of_one, r"\(BatchNormalization\) has inputs"),
    # strides of floats reached tuple(int) in the reader before ONNX Runtime saw them
    (_attribute("Conv", "strides", [1.5, 1.5]), r"attributes \['strides'\] of a type its op does not take"),
    # ONNX Runtime asked for 200,000 outputs: more than a minute before it answered
    (_many_relus, "has more than 20000 nodes"),
    # two weights of one name: the reader kept the last, ONNX Runtime ran one of them
    (_set(lambda g: g.initializer.add().CopyFrom(_weight(g))), "two initializers named 'Conv1/W'"),
    # KeyError: 999 (a data type onnx has no NumPy type for)
    (_set(lambda g: setattr(_weight(g), "data_type", 999)), "tensor 'Conv1/W' of dims .* cannot be read"),
    # a batch of -1 images split the input into no parts: np.concatenate's ValueError
    (_set(lambda g: setattr(g.input[0].type.tensor_type.shape.dim[0], "dim_value", -1)), "declares a batch of -1"),
    # WeightsError "layer 'Conv1' weight 'kernel' contains NaN or inf", naming no file
    (_nan_weight, "its own weights cannot be the reference's .*NaN or inf.*--weights"),
])
def test_a_damaged_onnx_graph_is_refused_naming_the_file(onnx_bytes, tmp_path, edit, says):
    path = tmp_path / "hostile.onnx"
    path.write_bytes(_onnx_edit(onnx_bytes, edit))
    _refused(path, says)


def test_an_onnx_name_that_is_not_utf8_is_refused(onnx_bytes, tmp_path):
    """protobuf hands such a name to Python as bytes: onnx.helper's UnicodeDecodeError where the
    reader made it a graph output (found by tests/fuzz's onnx kind)."""
    assert onnx_bytes.count(b"Conv1_relu") > 1
    path = tmp_path / "names.onnx"
    path.write_bytes(onnx_bytes.replace(b"Conv1_relu", b"Conv1_rel\xff"))
    _refused(path, "names a node or tensor in bytes that are not UTF-8")


def test_local_functions_that_inline_to_2_to_the_40_nodes_are_refused_before_inlining(tmp_path):
    """Each function calls the one below twice: 2**40 Relus once inlined, from 2 KB (onnx's
    inliner would build them all); a function that calls itself never ends."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("bomb", 1)]

    def model(functions, top):
        graph = helper.make_graph([helper.make_node(top, ["x"], ["y"], domain="bomb")], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        return helper.make_model(graph, opset_imports=opsets, functions=functions).SerializeToString()
    doubling = [helper.make_function("bomb", "f0", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], opsets)]
    for i in range(1, 41):
        doubling.append(helper.make_function("bomb", f"f{i}", ["a"], ["b"], [
            helper.make_node(f"f{i - 1}", ["a"], ["m"], domain="bomb"),
            helper.make_node(f"f{i - 1}", ["m"], ["b"], domain="bomb")], opsets))
    itself = [helper.make_function("bomb", "f", ["a"], ["b"], [helper.make_node("f", ["a"], ["b"], domain="bomb")], opsets)]
    for name, (functions, top) in {"doubling": (doubling, "f40"), "itself": (itself, "f")}.items():
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(model(functions, top))
        assert path.stat().st_size < 4096
        # in a child: onnx's inliner, in C++, would not hear the alarm
        child = subprocess.run([sys.executable, "-m", "mobilenetv2", "compare", str(path), "--quiet"],
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert child.returncode == 2 and child.stderr.count("\n") == 1, child.stderr
        assert f"{name}.onnx" in child.stderr and "has more than 20000 nodes (its local functions inlined)" in child.stderr


def test_onnx_weights_of_nan_against_named_weights_diverge_at_the_layer(onnx_bytes, backbone, tmp_path):
    """With --weights, OTHER's NaN is what compare reports: the layer it reaches first diverges."""
    path = tmp_path / "nan.onnx"
    path.write_bytes(_onnx_edit(onnx_bytes, _nan_weight))
    weights = tmp_path / "w.h5"
    backbone.save_weights(weights)
    report = compare(str(path), weights=str(weights))
    assert not report["agrees"] and report["first_divergent_layer"] in ("Conv1", "bn_Conv1", "Conv1_relu")


# -- TFLite -------------------------------------------------------------------------------------------
def _conv_kernel(m, g):
    return next(t for t in g.tensors if t.name == b"Conv1/kernel")


@pytest.mark.parametrize("edit, says", [
    # a float kernel typed STRING: LiteRT's get_tensor read its bytes as string offsets (SIGSEGV)
    (lambda m, g, s: setattr(_conv_kernel(m, g), "type", s.TensorType.STRING), "Conv1/kernel' is .* no quantization"),
    # the same bytes typed INT32 were read as integers: the reference's weights, 'NaN or inf' after
    (lambda m, g, s: setattr(_conv_kernel(m, g), "type", s.TensorType.INT32), "Conv1/kernel' is int32 with no quantization"),
    # ValueError: not enough values to unpack / too many values to unpack
    (lambda m, g, s: setattr(g, "inputs", []), "has 0 inputs"),
    (lambda m, g, s: setattr(g, "inputs", list(g.inputs) * 2), "has 2 inputs"),
    # UnicodeDecodeError from LiteRT's tensor details, a ValueError none caught
    (lambda m, g, s: setattr(_conv_kernel(m, g), "name", b"\xff\xfe"), "LiteRT cannot load .*utf-8"),
])
def test_a_damaged_tflite_model_is_refused_naming_the_file(tflite_bytes, tmp_path, edit, says):
    path = tmp_path / "hostile.tflite"
    path.write_bytes(tflite_edit(tflite_bytes, edit))
    _refused(path, says)


def _unstored(m, g, s):
    """Conv1's kernel left without a buffer (buffer 0, the empty one): arena memory LiteRT never writes."""
    _conv_kernel(m, g).buffer = 0


def test_tflite_weights_computed_at_run_time_are_refused(tflite_bytes, backbone, tmp_path):
    """A conv whose weight has no buffer was read as whatever LiteRT held for it before a run
    (an AttributeError where it held nothing, and a bias so read was a silent zero).  (A float16
    model's DEQUANTIZE output is read as the float16 constant behind it: test_compare_peers.)"""
    path = tmp_path / "runtime.tflite"
    path.write_bytes(tflite_edit(tflite_bytes, _unstored))
    text = _refused(path, "computed at run time are not read; give the reference weights with --weights")
    assert "op 0 (CONV_2D 'Conv1_relu') reads tensor 'Conv1/kernel'" in text, text
    weights = tmp_path / "w.h5"
    backbone.save_weights(weights)
    _refused(path, "LiteRT failed running .* lacks data", weights=str(weights))  # LiteRT itself refuses to run it


# -- truncations and bit flips: a CompareError, nothing else ---------------------------------------
def _damaged(data, cut, flips):
    data = bytearray(data[:cut] if cut < len(data) else data)
    for at, bits in flips:
        data[at % len(data)] ^= bits
    return bytes(data)


_DAMAGE = dict(cut=st.integers(1, 1 << 22), flips=st.lists(st.tuples(st.integers(0, 1 << 22), st.integers(1, 255)),
                                                           max_size=4))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_DAMAGE)
def test_damaged_onnx_bytes_are_refused_or_read(onnx_bytes, tmp_path, cut, flips):
    _refused_or_read(tmp_path / "d.onnx", _damaged(onnx_bytes, cut, flips))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_DAMAGE)
def test_damaged_tflite_bytes_are_refused_or_read(tflite_bytes, tmp_path, cut, flips):
    _refused_or_read(tmp_path / "d.tflite", _damaged(tflite_bytes, cut, flips))


def _refused_or_read(path, data):
    path.write_bytes(data)
    from mobilenetv2.tools.compare.api import open_other
    try:
        open_other(str(path))
    except CompareError as exc:
        assert path.name in str(exc)


# -- OpenVINO IR ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ir(onnx_bytes, tmp_path_factory):
    ov = pytest.importorskip("openvino")
    folder = tmp_path_factory.mktemp("ir")
    (folder / "m.onnx").write_bytes(onnx_bytes)
    ov.save_model(ov.convert_model(str(folder / "m.onnx")), str(folder / "m.xml"), compress_to_fp16=False)
    return (folder / "m.xml").read_text(), (folder / "m.bin").read_bytes()


def _cut_bin(xml, weights):
    return xml, weights[:len(weights) // 2]


def _constant_past_the_end(xml, weights):
    return re.sub(r'offset="\d+"', 'offset="99999999"', xml, count=1), weights


@pytest.mark.parametrize("edit, at_fault", [
    (lambda xml, w: (xml[:-200], w), ".xml 'm.xml': Error parsing"),              # XML cut short
    (lambda xml, w: (xml.replace('type="Convolution"', 'type="Convolutionx"', 1), w),
     ".xml 'm.xml': Opset .* the operation with type: Convolutionx"),             # an unknown op
    (lambda xml, w: (re.sub(r'strides="[^"]*"', 'strides="a,b"', xml, count=1), w),
     ".xml 'm.xml': Cannot parse 'a'"),                                             # an attribute's value
    (_cut_bin, "weights 'm.bin' of the IR 'm.xml': .*cut short or of another model"),
    (_constant_past_the_end, "weights 'm.bin' of the IR 'm.xml': .*cut short or of another model"),
])
def test_an_ir_that_openvino_cannot_read_names_the_file_at_fault(ir, tmp_path, edit, at_fault):
    """Every read error ended '(a .bin cut short or of another model?)', an .xml that does not
    parse or names an op OpenVINO does not know too."""
    xml, weights = edit(*ir)
    (tmp_path / "m.xml").write_text(xml)
    (tmp_path / "m.bin").write_bytes(weights)
    with pytest.raises(CompareError) as info:
        compare(str(tmp_path / "m.xml"))
    text = re.sub(r"'[^']*/(m\.(xml|bin))'", r"'\1'", str(info.value))
    assert re.search(at_fault, text), text
    assert ("another model" in text) == (edit in (_cut_bin, _constant_past_the_end)), text


def test_an_ir_of_millions_of_tags_is_refused_before_openvino_parses_it(ir, tmp_path):
    """3 million empty elements (12 MB) were parsed, kept and ignored by OpenVINO (~20 s, 1 GB)."""
    xml, weights = ir
    (tmp_path / "m.xml").write_text(xml.replace("</net>", "<x/>" * (1 << 21) + "</net>"))
    (tmp_path / "m.bin").write_bytes(weights)
    _refused(tmp_path / "m.xml", r"holds 2[0-9]{6} XML tags, more than the 1048576")


def test_an_ir_naming_an_op_in_bytes_that_are_not_utf8_is_refused(ir, tmp_path):
    """pybind11's UnicodeDecodeError from get_friendly_name (found by tests/fuzz's openvino kind)."""
    xml, weights = ir
    name = re.search(r'<layer id="\d+" name="([^"]+)" type="Convolution"', xml).group(1)
    (tmp_path / "m.xml").write_bytes(xml.replace(f'name="{name}"', f'name="{name}\xfd"', 1).encode("latin-1"))
    (tmp_path / "m.bin").write_bytes(weights)
    _refused(tmp_path / "m.xml", "names an op in bytes that are not UTF-8")


def test_an_ir_of_nan_weights_is_refused_naming_the_file(ir, tmp_path):
    xml, weights = ir
    at = re.search(r'<data element_type="f32" shape="16, 3, 3, 3" offset="(\d+)"', xml)
    assert at, "the stem's kernel is not where the test looks"
    off = int(at.group(1))
    (tmp_path / "m.xml").write_text(xml)
    (tmp_path / "m.bin").write_bytes(weights[:off] + np.float32(np.inf).tobytes() + weights[off + 4:])
    _refused(tmp_path / "m.xml", "its own weights cannot be the reference's .*NaN or inf")


# -- dumps, input batches, mappings ----------------------------------------------------------------------
def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _x(n=1):
    return np.random.default_rng(0).uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32)


def test_a_dump_s_archive_and_folder_are_checked_before_reading(tmp_path, monkeypatch):
    """The .npz's declared sizes are summed before any array is read; a member that is not an .npy
    is named; a link in a dump folder is not followed; a 0-d array in a dump is kept as it is."""
    from mobilenetv2.tools.compare import dump_reader
    from mobilenetv2.tools.compare.dump_reader import read_dump
    big = _npz(tmp_path / "big.npz", input=_x(), Conv1=np.zeros((1, 16, 16, 16), np.float32))
    monkeypatch.setattr(dump_reader, "MAX_BYTES", 16 * 16 * 16 * 4)  # Conv1 alone fills it
    with pytest.raises(CompareError, match=r"^'[^']*big\.npz' unpacks to 0\.0 GB, more than a MobileNetV2 dump needs "
                                           r"\(0 GB\): dump fewer layers"):  # 28 kB, over the 16 kB patched in
        read_dump(big)
    monkeypatch.undo()
    odd = tmp_path / "odd.npz"
    with zipfile.ZipFile(odd, "w") as zf:
        zf.writestr("input.npy", _npy_bytes(_x()))
        zf.writestr("notes.txt", b"hello")
    with pytest.raises(CompareError, match=r"^'[^']*odd\.npz' holds 'notes\.txt', not an \.npy array"):  # not rewrapped
        read_dump(odd)
    folder = tmp_path / "dump"
    folder.mkdir()
    np.save(folder / "input.npy", _x())
    np.save(tmp_path / "elsewhere.npy", np.zeros((1, 16, 16, 16), np.float32))
    os.symlink(tmp_path / "elsewhere.npy", folder / "Conv1.npy")
    with pytest.raises(CompareError, match=r"Conv1\.npy' is not a plain file \(links are not followed\)"):
        read_dump(folder)
    other = read_dump(_npz(tmp_path / "s.npz", input=_x(2), scale=np.float32(0.5), Conv1=np.ones((2, 4), np.float32)))
    assert other.fixed_tensors["scale"].shape == () and other.fixed_tensors["Conv1"].shape == (2, 4)
    # no layout given: an input with 3 channels at axis 1 (and not at 3) is NCHW, read as NHWC
    nchw = read_dump(_npz(tmp_path / "nchw.npz", input=_x(2).transpose(0, 3, 1, 2), Conv1=np.ones((2, 4, 16, 16), np.float32)))
    assert nchw.input_layout == "NCHW" and tuple(nchw.input_hw) == (32, 32)
    assert read_dump(_npz(tmp_path / "nhwc.npz", input=_x(2))).input_layout == "NHWC"


def test_an_input_batch_in_nchw_is_read_as_nhwc_and_one_input_only():
    from mobilenetv2.tools.compare.inputs import make_input
    x = _x(2)
    got, _ = make_input((32, 32), batch=x.transpose(0, 3, 1, 2))
    assert np.array_equal(got, x)
    with pytest.raises(CompareError, match="give one input: --images, --random or an .npy batch, not several"):
        make_input((32, 32), random=2, batch=x)
    with pytest.raises(CompareError, match=r"input batch has shape \(2, 32, 32, 3\); OTHER takes \(N, 32, 48, 3\)"):
        make_input((32, 48), batch=x)  # an image of another size
    got, what = make_input((32, 48), random=3, seed=9)  # as the report says: uniform [-1, 1]
    assert got.shape == (3, 32, 48, 3) and -1 <= got.min() < -0.99 and 0.99 < got.max() <= 1
    assert what == "3 random image(s), uniform [-1, 1], seed 9"


def test_an_npy_batch_s_own_errors_reach_the_user_as_they_are(tmp_path):
    """read_npy's own refusal of a file (here a pickle) is the message, not wrapped in 'is not an
    .npy array' with its text repeated; what numpy itself refuses is wrapped so."""
    from mobilenetv2.tools.compare.inputs import make_input
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CompareError) as info:
        make_input((32, 32), batch=str(path))
    assert "holds Python objects (a pickle), which compare never loads" in str(info.value)
    assert "is not an .npy array" not in str(info.value)
    (tmp_path / "text.npy").write_text("0.5, 0.25\n")  # numpy's own refusal is named as such
    with pytest.raises(CompareError, match=r"input batch '.*text\.npy' is not an \.npy array: "):
        make_input((32, 32), batch=str(tmp_path / "text.npy"))


@pytest.mark.parametrize("x, says", [
    (np.zeros((0, 32, 32, 3), np.float32), "holds 0 images"),       # compared nothing, and agreed
    (np.zeros((1, 1, 1, 3), np.float32), "takes 1x1 images; .* from 32 to 4096"),  # '--weights loads into no'
    (np.zeros((1, 5000, 33, 3), np.float32), "takes 5000x33 images"),
    (np.full((1, 32, 32, 3), np.nan, np.float32), "NaN or inf"),    # diverged, 'unexplained'
    (_x(MAX_IMAGES + 1), f"holds {MAX_IMAGES + 1} images"),
])
def test_a_dump_s_input_is_checked_as_a_batch_is(backbone, tmp_path, x, says):
    weights = tmp_path / "w.h5"
    backbone.save_weights(weights)
    dump = _npz(tmp_path / "d.npz", input=x, Conv1=np.zeros((len(x), 16, 16, 16), np.float32))
    _refused(dump, says, weights=str(weights))


class _KerasLike:
    """A Keras model as compare reads one: weights by layer name, get_layer's ValueError for a
    name it does not have (object_reader.py wraps a real one so)."""
    def __init__(self, store):
        self.store = store

    def keras_weights(self, name):
        if name not in self.store:
            raise ValueError(f"No such layer: {name}. Existing layers are: ...")
        return [np.asarray(w, np.float64) for w in self.store[name]]


def test_a_keras_model_is_read_by_layer_name_and_a_missing_layer_named():
    """A Keras model without block_16_project ended in a NameError (cout unset: get_layer's
    ValueError was taken for a missing head), one without another layer in Keras's own ValueError."""
    from mobilenetv2.tools.compare.weights import from_keras_object
    model = MobileNetV2((96, 96, 3), alpha=0.35, include_top=False, weights=None)
    rng = np.random.default_rng(0)
    store = {x.name: [rng.uniform(0.5, 1.5, shape) for shape in x.weight_shapes()] for x in model.weighted_layers()}
    m64, m32, desc, _ = from_keras_object(_KerasLike(store), (96, 96))
    assert "alpha=0.35" in desc and not m64.include_top and (m64.dtype, m32.dtype) == (np.float64, np.float32)
    assert all(np.array_equal(a, b) for x in m64.weighted_layers() for a, b in zip(x.get_weights(), store[x.name]))
    for gone in ("block_16_project", "block_3_expand"):
        with pytest.raises(CompareError, match=f"the Keras model has no (MobileNetV2 )?layer {gone}"):
            from_keras_object(_KerasLike({k: v for k, v in store.items() if k != gone}), (96, 96))
    odd = dict(store, block_16_project=[np.ones((1, 1, 112, 100))])  # 100 filters: no alpha's 320 x alpha
    with pytest.raises(CompareError, match="block_16_project has 100 filters: no MobileNetV2 alpha"):
        from_keras_object(_KerasLike(odd), (96, 96))


def test_metrics_by_hand():
    """rel_l2 |a - b| / |b| (|d| where b is 0), cosine 1 for two zero arrays and 0 for one, the
    floor of a layer float32 computes exactly 2**-30, and a ratio of exactly the factor agrees."""
    from mobilenetv2.tools.compare.metrics import TINY, metrics, noise_floor, rel_l2
    assert rel_l2([0.5], [0.25]) == 1.0 and rel_l2([3.0, 4.0], [0.0, 0.0]) == 5.0
    m = metrics(np.array([[0.0, 3.0]]), np.array([[4.0, 0.0]]))
    assert m == {"max_abs": 4.0, "rel_l2": 1.25, "cosine": 0.0}
    assert metrics(np.array([1.0, -2.0]), np.array([1.5, -1.0]))["max_abs"] == 1.0  # |a - b|, not |a + b| (3)
    assert metrics(np.array([0.3, 0.4]), np.array([0.4, 0.3]))["cosine"] == pytest.approx(0.24 / 0.25)  # norms 0.5
    assert metrics(np.zeros(3), np.zeros(3))["cosine"] == 1.0
    assert metrics(np.zeros(3), np.ones(3))["cosine"] == 0.0 == metrics(np.ones(3), np.zeros(3))["cosine"]
    assert noise_floor(np.float32([1.0, 2.0]), np.array([1.0, 2.0])) == (TINY, 0.0) and TINY == 2.0 ** -30
    ref = np.array([[3.0, 4.0]])  # |ref| = 5; an error of 0.5 is rel L2 0.1 = 10 x a floor of 0.01
    assert layer_row("Conv1", ref + [[0.5, 0.0]], ref, (0.01, 0.0), 10.0)["agrees"]
    assert not layer_row("Conv1", ref + [[0.5, 0.0]], ref, (0.01, 0.0), 9.99)["agrees"]


def test_one_float16_and_bfloat16_step_by_hand():
    """The step of float16 at a value is NumPy's np.spacing of it (10 stored bits; 2**-24 below
    the normal range); of bfloat16, 2**-7 at [1, 2) (7 stored bits), 2**-133 at the bottom."""
    from mobilenetv2.tools.compare.diagnose import _ulp
    v = np.array([1.0, 0.75, 1000.0, 2.0 ** -14, 2.0 ** -20, 0.0, -3.0])
    want = np.spacing(np.abs(v).astype(np.float16)).astype(np.float64)
    assert np.array_equal(_ulp(v, "float16"), want) and want[4] == want[5] == 2.0 ** -24
    assert _ulp(np.array([1.0, 1.5, 0.75, 0.0]), "bfloat16").tolist() == [2.0 ** -7, 2.0 ** -7, 2.0 ** -8, 2.0 ** -133]


def test_a_layer_whose_float32_floor_overflows_never_agrees():
    """An input of 3e38 (finite) overflows our float32 engine: a floor of inf made the ratio of
    any error 0, and a dump of zeros agreed with the reference's 1e39 values."""
    ref = np.full((1, 4), 1e39)
    row = layer_row("Conv1", np.zeros((1, 4)), ref, (np.inf, np.inf), 30.0)
    assert row["rel_l2"] == 1.0 and not row["agrees"] and "overflows" in row["note"]
    row = layer_row("Conv1", np.full((1, 4), np.nan), ref, (1e-7, 0.0), 30.0)
    assert not row["agrees"]


def _npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_an_input_batch_s_header_is_checked_before_allocating(onnx_bytes, tmp_path):
    """np.load allocated the 14.6 TiB the header declared: a MemoryError."""
    other = tmp_path / "m.onnx"
    other.write_bytes(onnx_bytes)
    raw = _npy_bytes(np.zeros(4, np.float32))
    lie = raw.replace(b"(4,), }" + b" " * 12, b"(4000000000000,), }")
    assert len(lie) == len(raw)
    (tmp_path / "lie.npy").write_bytes(lie)
    with pytest.raises(CompareError, match="lie.npy.* declares .*more than the 144 bytes stored"):
        compare(str(other), batch=str(tmp_path / "lie.npy"))
    for n in (0, MAX_IMAGES + 1):  # np.concatenate's ValueError for 0 images
        (tmp_path / "b.npy").write_bytes(_npy_bytes(_x(n) if n else np.zeros((0, 32, 32, 3), np.float32)))
        with pytest.raises(CompareError, match=f"input batch holds {n} images"):
            compare(str(other), batch=str(tmp_path / "b.npy"))


def test_an_input_batch_that_is_a_fifo_is_refused_at_once(onnx_bytes, tmp_path):
    """np.load opened it and waited for a writer."""
    other = tmp_path / "m.onnx"
    other.write_bytes(onnx_bytes)
    os.mkfifo(tmp_path / "x.npy")
    box = {}

    def go():
        try:
            compare(str(other), batch=str(tmp_path / "x.npy"))
        except CompareError as exc:
            box["error"] = str(exc)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "compare waited on the FIFO"
    assert "x.npy" in box.get("error", "") and "FIFO" in box["error"]


def test_a_mapping_file_is_read_up_to_1_mib(tmp_path):
    """A mapping file of 1 MiB (a JSON object padded with spaces) is read; a byte more is refused
    before it is read, naming the file and the bound."""
    import json
    from mobilenetv2.tools.compare.mapping import load_mapping_file
    body = json.dumps({"tensors": {"Conv1": "Conv1"}}).encode()
    path = tmp_path / "map.json"
    path.write_bytes(body + b" " * ((1 << 20) - len(body)))
    assert load_mapping_file(path)[0] == {"Conv1": "Conv1"}
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(CompareError, match=r"mapping file '.*map\.json' is larger than 1048576 bytes"):
        load_mapping_file(path)


@pytest.mark.parametrize("field, value", [("input", ["x"]), ("input", {"a": 1}), ("layout", 3), ("layout", ["NCHW"])])
def test_a_mapping_s_input_and_layout_are_strings(tmp_path, capsys, field, value):
    """{"input": ["x"]} was a TypeError (unhashable type: 'list') where the dump looked it up."""
    import json
    dump = _npz(tmp_path / "d.npz", input=_x(), Conv1=np.zeros((1, 16, 16, 16), np.float32))
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"tensors": {"Conv1": "Conv1"}, field: value}))
    with pytest.raises(CompareError, match="map.json.* must be a JSON object"):
        compare(str(dump), weights="none", mapping=str(mapping))
    assert main(["compare", str(dump), "--mapping", str(mapping), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "map.json" in err


def test_an_input_without_3_channels_at_axis_1_or_3_is_refused_by_name(tmp_path):
    """An image input holds its 3 channels at axis 1 (NCHW) or 3 (NHWC); any other 4-d input is
    refused naming the file and its shape (by hand: (1, 32, 32, 4), (1, 4, 32, 32), (1, 32, 3, 32));
    a batch declared below 1 is refused too."""
    from mobilenetv2.tools.compare.graph import image_input
    assert image_input((1, 3, 32, 40), "m", "s") == ("NCHW", (32, 40))
    assert image_input((None, 32, None, 3), "m", "s") == ("NHWC", None)
    for dims in ((1, 32, 32, 4), (1, 4, 32, 32), (1, 32, 3, 32)):
        with pytest.raises(CompareError, match=r"'m': input shape s has 3 channels neither at axis 1 \(NCHW\) "
                                               r"nor at axis 3 \(NHWC\)"):
            image_input(dims, "m", "s")
    with pytest.raises(CompareError, match="declares a batch of 0 images"):
        image_input((0, 3, 32, 32), "m", "s")
    onnx = pytest.importorskip("onnx", reason="an ONNX file is built with the onnx extra")
    h = onnx.helper
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32, 32, 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32, 32, 4])])
    path = str(tmp_path / "four.onnx")
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), path)
    with pytest.raises(CompareError, match=re.escape(repr(path)) + r": input shape \[1, 32, 32, 4\] has 3 channels neither"):
        compare(path, random=1)


def test_an_image_input_s_layout_and_sides_come_from_its_channel_axis():
    """3 channels at axis 1: NCHW, sides at 2 and 3; at axis 3: NHWC, sides at 1 and 2 (a
    non-square input tells them apart); a dynamic side gives no size; neither axis is refused."""
    from mobilenetv2.tools.compare.graph import image_input
    assert image_input((None, 96, 128, 3), "m.onnx", "[N, 96, 128, 3]") == ("NHWC", (96, 128))
    assert image_input((1, 3, 96, 128), "m.onnx", "[1, 3, 96, 128]") == ("NCHW", (96, 128))
    assert image_input((1, 96, None, 3), "m.onnx", "[1, 96, W, 3]") == ("NHWC", None)
    with pytest.raises(CompareError, match=r"^'m\.onnx': input shape \[1, 5, 5, 5\] has 3 channels neither at axis 1"):
        image_input((1, 5, 5, 5), "m.onnx", "[1, 5, 5, 5]")


def test_compare_takes_1_to_32_images_and_one_random_224_image_by_default():
    from mobilenetv2.tools.compare.inputs import MAX_IMAGES, check_images, make_input
    assert MAX_IMAGES == 32
    check_images(np.zeros((32, 2, 2, 3), np.float32), "batch")  # exactly the most
    for n in (0, 33):
        with pytest.raises(CompareError, match=rf"^batch holds {n} images; compare runs 1 to 32 at once$"):
            check_images(np.zeros((n, 2, 2, 3), np.float32), "batch")
    x, what = make_input(None)  # no size known (a dynamic input) and no input given
    assert x.shape == (1, 224, 224, 3) and what == "1 random image(s), uniform [-1, 1], seed 0"
