"""Live model objects as OTHER: a torch ``nn.Module`` (a torchvision or Hugging Face
MobileNetV2) through forward hooks on its leaf modules, or a Keras model through a model that
outputs every layer (its layers carry Keras's names, so they map by name); an ``openvino.Model``
goes to ``openvino_reader``.  Each is an optional extra."""
import numpy as np

from mobilenetv2.tools.compare.errors import CompareError, require
from mobilenetv2.tools.compare.graph import Node, OtherModel


def read_object(obj):
    kind = type(obj).__module__.split(".")[0]
    # Keras first: on Keras 3's torch backend a Keras model is also a torch.nn.Module
    if kind in ("keras", "tensorflow", "tf_keras") or hasattr(obj, "get_layer") and hasattr(obj, "layers"):
        return _read_keras(obj)
    if kind in ("torch", "torchvision", "transformers", "timm") or hasattr(obj, "register_forward_hook"):
        return _read_torch(obj)
    if kind == "openvino":
        from mobilenetv2.tools.compare.openvino_reader import read_model
        return read_model(obj)
    raise CompareError(f"OTHER must be a path (.onnx, .tflite, .xml, .npz, a folder of .npy), a torch "
                       f"module, a Keras model or an openvino.Model, got {type(obj).__name__}")


def _numpy(t):
    """A torch tensor's values as float64 NumPy, wherever it lives (a GPU's memory) and in whatever
    float type it is."""
    return t.detach().cpu().double().numpy()


def _read_torch(module):
    torch = require("torch", "comparing a torch module", "torch")
    leaves = [(n, m) for n, m in module.named_modules() if not list(m.children())]
    order = []
    # the images are fed as the module computes: in its parameters' float type, on their device
    first = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype, device = (torch.float32, None) if first is None else (first.dtype, first.device)
    if device is not None and device.type == "meta":
        raise CompareError(f"torch module {type(module).__name__!r} has its parameters on the 'meta' device (no "
                           "values: its weights never loaded); load them, e.g. module.to_empty(...) then "
                           "load_state_dict(...), before comparing it")

    def hook_for(name, m):
        def hook(mod, inputs, output):
            # a copy: an in-place op after this module (torchvision's ReLU6(inplace=True) after
            # each batch norm) would otherwise change the tensor kept here
            order.append((name, mod, output.detach().clone() if isinstance(output, torch.Tensor) else output))
        return hook

    def run(x):
        order.clear()
        handles = [m.register_forward_hook(hook_for(n, m)) for n, m in leaves]
        training = [(m, m.training) for m in module.modules()]  # run in eval mode, left as found
        module.eval()
        try:
            with torch.no_grad():
                t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device=device, dtype=dtype)
                module(t)
        except Exception as exc:  # torch's own errors (a module of another input, a type it cannot run)
            n, h, w, c = x.shape
            raise CompareError(f"torch module {type(module).__name__!r} failed running on input {[n, c, h, w]} "
                               f"({dtype}): {type(exc).__name__}: {str(exc)[:200]}") from None
        finally:
            for h in handles:
                h.remove()
            for m, mode in training:
                m.training = mode
        return {name: _numpy(out) for name, _, out in order if isinstance(out, torch.Tensor)}

    nodes, prev = [], "input"
    for name, m in leaves:
        cls = type(m).__name__
        if cls == "Conv2d":
            w = _numpy(m.weight)
            b = None if m.bias is None else _numpy(m.bias)
            nodes.append(Node("conv", [prev], name, name, dict(weight=w, bias=b, group=m.groups)))
        elif cls == "BatchNorm2d":
            nodes.append(Node("bn", [prev], name, name, dict(
                gamma=_numpy(m.weight), beta=_numpy(m.bias), mean=_numpy(m.running_mean), var=_numpy(m.running_var),
                eps=m.eps)))
        elif cls in ("ReLU6", "Hardtanh"):
            nodes.append(Node("clip", [prev], name, name))
        elif cls == "ReLU":
            nodes.append(Node("relu", [prev], name, name))
        elif cls == "Linear":
            nodes.append(Node("dense", [prev], name, name, dict(
                weight=_numpy(m.weight), bias=None if m.bias is None else _numpy(m.bias))))
        elif cls in ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d"):
            nodes.append(Node("pool", [prev], name, name, dict(kind="max" if "Max" in cls else "average")))
        else:
            continue
        prev = name
    other = OtherModel("torch", type(module).__name__, nodes, "NCHW", None, "NCHW", runner=run)
    # its final output: the last leaf's (torchvision pools in forward, with no module to hook,
    # so its classifier's Linear is mapped there rather than after a pooling)
    other.outputs = [nodes[-1].output] if nodes else None
    return other


def _read_keras(model):
    """A Keras MobileNetV2: every layer's output by its name (Keras names map by name); its
    weights by layer name (``keras_weights``)."""
    keras = require("keras", "comparing a Keras model", "keras")
    name = getattr(model, "name", "keras model")
    shape = getattr(model, "input_shape", None)  # a list of shapes where the model has several inputs
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise CompareError(f"Keras model {name!r} takes input of shape {str(shape)[:200]}; a MobileNetV2 takes "
                           "one image batch (N, H, W, 3)")
    layers = [layer for layer in model.layers[1:]]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    names = [layer.name for layer in layers]

    def run(x):
        outs = probe.predict(np.asarray(x, np.float32), verbose=0)
        return {n: np.asarray(o) for n, o in zip(names, outs)}

    shape = tuple(shape[1:3])
    other = OtherModel("keras", name, [], "NHWC",
                       None if None in shape else shape, "NHWC", runner=run)
    other.tensor_names = names
    other.keras_weights = lambda name: [np.asarray(w, np.float64) for w in model.get_layer(name).get_weights()]
    return other
