"""``compare`` with a live torch module as OTHER (the reader hooks every leaf module): a torch
MobileNetV2 built here with torch.nn from our weights agrees; one with ReLU for ReLU6, or batch-norm
epsilon 1e-5 (PyTorch's default) in one layer, is caught at that layer with that cause; a
transformers MobileNetV2Model from ../shared/hf agrees.  torch is not a test extra (CI has none):
these tests skip there and run where torch is installed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch reader's tests need torch, which is not a test extra "
                                            "(pip install torch to run them)")
nn = torch.nn

from conftest import require_shared  # noqa: E402
from mobilenetv2 import MobileNetV2  # noqa: E402
from mobilenetv2.network import layers as L  # noqa: E402
from mobilenetv2.tools.compare import compare  # noqa: E402
from onnx_graphs import lively_weights  # noqa: E402

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

SHAPE = (96, 96, 3)


class KerasOrderNet(nn.Module):
    """MobileNetV2 in torch.nn, one module per Keras layer (registered in Keras's order, as
    torchvision registers its own): Conv2d without bias, BatchNorm2d, ReLU6, TF's "same" padding
    as a ZeroPad2d before each stride-2 conv, residual adds in forward, AdaptiveAvgPool2d + Linear.
    ``relu``: layers made nn.ReLU; ``eps``: {BN layer: epsilon}."""

    def __init__(self, model, relu=(), eps=None, pool_in_forward=None, max_pool=False):
        """``pool_in_forward``: 'mean' or 'amax': the pooling done in forward with no module to
        hook (torchvision's ``adaptive_avg_pool2d`` call), by mean or by max; ``max_pool``: the
        pooling module is an AdaptiveMaxPool2d."""
        super().__init__()
        eps = eps or {}
        self.pool_in_forward = pool_in_forward
        self.mods = nn.ModuleDict()
        self.plan = []
        shapes = {model.layers[0].name: model.input_shape}
        for layer in model.layers[1:]:
            src = layer.inputs[0]
            h, w, c = shapes[src] if len(shapes[src]) == 3 else (None, None, shapes[src][0])
            shapes[layer.name] = layer.output_shape(*[shapes[i] for i in layer.inputs])
            key = layer.name
            if isinstance(layer, L.ZeroPadding2D):
                t, b, lf, r = layer.pads(h, w)
                self.mods[key] = nn.ZeroPad2d((lf, r, t, b))
            elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
                t, b, lf, r = layer.pads(h, w)
                if (t, b) != (lf, r) or t != b:
                    self.mods[key + "_pad"] = nn.ZeroPad2d((lf, r, t, b))
                    self.plan.append((key + "_pad", "mod", (src,)))
                    src, t = key + "_pad", 0
                k = np.asarray(layer.weights[0], np.float32)
                if isinstance(layer, L.DepthwiseConv2D):
                    conv = nn.Conv2d(c, c, 3, layer.stride, t, groups=c, bias=False)
                    conv.weight.data = torch.from_numpy(np.ascontiguousarray(k[:, :, :, 0].transpose(2, 0, 1)[:, None]))
                else:
                    conv = nn.Conv2d(c, layer.cout, layer.kernel, layer.stride, t, bias=False)
                    conv.weight.data = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
                self.mods[key] = conv
            elif isinstance(layer, L.BatchNormalization):
                bn = nn.BatchNorm2d(c, eps=eps.get(layer.name, layer.epsilon))
                g, be, mu, var = (torch.tensor(np.asarray(a, np.float32)) for a in layer.weights)
                bn.weight.data, bn.bias.data, bn.running_mean.data, bn.running_var.data = g, be, mu, var
                self.mods[key] = bn
            elif isinstance(layer, L.ReLU):
                self.mods[key] = nn.ReLU() if layer.name in relu else nn.ReLU6()
            elif isinstance(layer, L.GlobalAveragePooling2D):
                self.mods[key] = (nn.Identity() if pool_in_forward is not None else
                                  nn.AdaptiveMaxPool2d(1) if max_pool else nn.AdaptiveAvgPool2d(1))
            elif isinstance(layer, L.Dense):
                k, bias = (torch.tensor(np.asarray(a, np.float32)) for a in layer.weights)
                lin = nn.Linear(k.shape[0], k.shape[1])
                lin.weight.data, lin.bias.data = k.T.contiguous(), bias
                self.mods[key] = lin
            kind = "add" if isinstance(layer, L.Add) else "mod"
            self.plan.append((key, kind, (src,) if kind == "mod" else layer.inputs))
        self.input_name = model.layers[0].name

    def forward(self, x):
        out = {self.input_name: x}
        for key, kind, ins in self.plan:
            if kind == "add":
                out[key] = out[ins[0]] + out[ins[1]]
            else:
                y = out[ins[0]]
                if isinstance(self.mods[key], nn.Identity):  # the pooling, in forward
                    y = getattr(torch, self.pool_in_forward)(y, dim=(2, 3))
                if isinstance(self.mods[key], nn.Linear):
                    y = y.flatten(1)
                out[key] = self.mods[key](y)
        return out[self.plan[-1][0]]


@pytest.fixture(scope="module")
def model():
    return lively_weights(MobileNetV2(SHAPE, alpha=0.35, weights=None, classifier_activation=None), seed=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(11).uniform(-1, 1, (2,) + SHAPE).astype(np.float32)


def test_torch_module_built_from_our_weights_agrees(model, x):
    net = KerasOrderNet(model).eval()
    with torch.no_grad():  # independent of compare: the module computes what the float64 engine does
        logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.allclose(logits, model.predict(x.astype(np.float64)), rtol=1e-4, atol=1e-4)
    for weights in (None, model):  # the module's own weights (separate BNs), or ours named
        report = compare(net, weights=weights, batch=x)
        assert report["other"]["kind"] == "torch"
        assert report["agrees"], [r for r in report["layers"] if not r["agrees"]][:1]
        layers = [r["layer"] for r in report["layers"]]
        assert layers[:3] == ["Conv1", "bn_Conv1", "Conv1_relu"] and layers[-2:] == ["global_average_pooling2d", "predictions"]
        # every conv, BN and ReLU6 is hooked (residual adds are tensor ops, not modules)
        assert len(layers) == sum(isinstance(x_, (L.Conv2D, L.DepthwiseConv2D, L.BatchNormalization, L.ReLU))
                                  for x_ in model.layers) + 2
    assert "0 with the batch norm folded in" in compare(net, batch=x)["weights"]["source"]


def test_the_module_is_run_in_eval_mode_and_left_as_found(model, x):
    """compare ran the module in eval mode and left it there: a module being trained was
    switched to eval for good."""
    net = KerasOrderNet(model).train()
    net.mods["bn_Conv1"].eval()  # one submodule in its own mode
    assert compare(net, weights=model, batch=x)["agrees"]  # batch norms with running statistics
    assert net.training and not net.mods["bn_Conv1"].training and net.mods["Conv1"].training


def test_pooling_in_forward_still_compares_the_output(model, x):
    """torchvision pools in forward (no module to hook): the Linear's output is still compared as
    the predictions (it was left unmapped, and a max pooling there agreed)."""
    report = compare(KerasOrderNet(model, pool_in_forward="mean").eval(), weights=model, batch=x)
    assert report["agrees"] and report["layers"][-1]["layer"] == "predictions"
    assert "global_average_pooling2d" in [u["layer"] for u in report["unmapped"]]
    report = compare(KerasOrderNet(model, pool_in_forward="amax").eval(), weights=model, batch=x)
    assert report["first_divergent_layer"] == "predictions"
    d = report["diagnosis"]
    assert d["cause"] == "pooling" and d["evidence"][0]["detail"]["other_pooling"] == "max"


def test_max_pooling_module_found_at_the_pooling(model, x):
    """A hooked AdaptiveMaxPool2d where Keras averages: the pooling layer diverges, diagnosed as
    OTHER's max pooling (the module's kind, read from its class)."""
    report = compare(KerasOrderNet(model, max_pool=True).eval(), weights=model, batch=x)
    assert report["first_divergent_layer"] == "global_average_pooling2d"
    d = report["diagnosis"]
    assert d["cause"] == "pooling" and d["evidence"][0]["detail"]["other_pooling"] == "max"
    assert d["after_fix"]["agrees"]


@pytest.mark.parametrize("defect,layer,cause", [
    (dict(relu={"block_3_expand_relu"}), "block_3_expand_relu", "activation"),
    (dict(eps={"block_5_depthwise_BN": 1e-5}), "block_5_depthwise_BN", "bn_epsilon"),
])
def test_torch_module_defect_found(model, x, defect, layer, cause):
    net = KerasOrderNet(model, **defect).eval()
    report = compare(net, batch=x)  # weights read from the module: a BN's epsilon stays visible
    d = report["diagnosis"]
    assert (report["first_divergent_layer"], d["cause"], d["also"]) == (layer, cause, [])
    assert d["evidence"][0]["after"]["ratio"] <= report["factor"] < d["evidence"][0]["before"]["ratio"]
    assert d["after_fix"]["agrees"]
    if cause == "bn_epsilon":
        assert d["evidence"][0]["detail"]["epsilon"] == 1e-5


def test_transformers_model_agrees():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    folder = require_shared("hf", "mobilenet_v2_0.35_96")
    hf = transformers.MobileNetV2Model.from_pretrained(str(folder)).eval()
    x = np.random.default_rng(5).uniform(-1, 1, (1,) + SHAPE).astype(np.float32)
    report = compare(hf, batch=x)  # weights from the module; its tf_padding is functional, not a module
    assert report["agrees"], (report["first_divergent_layer"], report["diagnosis"])
    assert len(report["layers"]) >= 100 and report["layers"][-1]["layer"] == "global_average_pooling2d"


def test_torchvision_model_given_keras_weights_is_explained(model, x):
    """torchvision's own MobileNetV2 (in-place ReLU6s, residual adds and the pooling in forward,
    padding=1 on every conv, batch-norm epsilon 1e-5) given our weights, conv by conv: compare
    names its three differences from Keras's graph, and with them applied every layer agrees.
    (Its in-place ReLU6 used to change the batch norms' hooked outputs: unexplained at bn_Conv1.)"""
    torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")
    m = lively_weights(MobileNetV2(SHAPE, alpha=1.0, weights=None, classifier_activation=None), seed=3)
    net = torchvision.models.mobilenet_v2(weights=None).eval()
    convs = [k for k in m.layers if isinstance(k, (L.Conv2D, L.DepthwiseConv2D))]
    for k, t in zip(convs, [t for t in net.modules() if isinstance(t, nn.Conv2d)], strict=True):
        w = np.asarray(k.weights[0], np.float32)
        w = w[:, :, :, 0].transpose(2, 0, 1)[:, None] if isinstance(k, L.DepthwiseConv2D) else w.transpose(3, 2, 0, 1)
        t.weight.data = torch.from_numpy(np.ascontiguousarray(w))
    bns = [k for k in m.layers if isinstance(k, L.BatchNormalization)]
    for k, t in zip(bns, [t for t in net.modules() if isinstance(t, nn.BatchNorm2d)], strict=True):
        t.weight.data, t.bias.data, t.running_mean.data, t.running_var.data = (
            torch.from_numpy(np.array(a, np.float32)) for a in k.weights)
    kernel, bias = m.get_layer("predictions").weights
    net.classifier[1].weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, np.float32).T))
    net.classifier[1].bias.data = torch.from_numpy(np.asarray(bias, np.float32))
    report = compare(net, weights=m, batch=x[:1])
    found = [report["diagnosis"]] + report["diagnosis"]["further"]
    assert [(d["layer"], d["cause"]) for d in found] == [
        ("Conv1", "padding"), ("bn_Conv1", "bn_epsilon"), ("block_1_depthwise", "padding")]
    assert found[1]["evidence"][0]["detail"]["epsilon"] == 1e-5 and found[1]["scope"] == "every batch norm"
    assert found[-1]["after_fix"]["agrees"] and report["layers"][-1]["layer"] == "predictions"
    assert all("forward" in u["why"] for u in report["unmapped"] if u["layer"].endswith("_add"))


def test_head_left_in_training_mode_blames_no_padding():
    """A dropout left on in the head (transformers' head exported by the dynamo exporter from a
    wrapper in training mode: a RandomUniformLike in the graph) gives random predictions while
    every layer before them agrees: unexplained, and no pads are shown as the closest candidate
    (symmetric pads on every stride-2 conv, all compared and agreeing, cut this random error by
    14 % and were named)."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    folder = require_shared("hf", "mobilenet_v2_0.35_96")
    hf = transformers.MobileNetV2ForImageClassification.from_pretrained(str(folder)).eval()
    hf.classifier.register_forward_pre_hook(lambda mod, args: (nn.functional.dropout(args[0], 0.8, training=True),))
    x = np.random.default_rng(5).uniform(-1, 1, (1,) + SHAPE).astype(np.float32)
    torch.manual_seed(0)
    report = compare(hf, batch=x)
    assert report["first_divergent_layer"] == "predictions"
    assert all(r["agrees"] for r in report["layers"][:-1])
    d = report["diagnosis"]
    assert d["cause"] == "unexplained"
    assert all(e.get("closest") != "padding" for e in d["evidence"]), d["evidence"]
