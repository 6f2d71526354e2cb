"""The package's folders follow its data flow (STYLE.md, section 8): a module imports only modules
of its own stage or an earlier one, so a reader can take the stages in order.

formats/ comes after network/ because every reader checks a stranger's declared shapes against the
network's before it reads anything; the NumPy kernels and the machine's facts import nothing of the
package, so the network's layers (computed by those kernels) and the readers may use them."""
import ast
from pathlib import Path

import pytest

import mobilenetv2

ROOT = Path(mobilenetv2.__file__).resolve().parent
STAGES = (
    ("errors", "files", "engines/numpy_kernels", "engines/machine"),  # foundations
    ("network/",),                      # the block table, the layers, the variants' costs
    ("formats/",),                      # files in: Keras, safetensors, transformers' configs, the registry
    ("engines/",),                      # the C extension, its entry points, the thread pool, the plan
    ("processing/",),                   # images in, labels out
    ("model", "hf"),                    # the model families: Keras's and transformers'
    ("tools/", "model_options"),        # compare, benchmark, export
    ("batch/", "ray", "dask", "cli", "__init__", "__main__"),  # what a user runs
)
# names a module may import from the package root without depending on what it re-exports
ROOT_ITSELF = {"_mnv2", "__version__"}


def stage(module):
    """The index of ``module``'s stage (a path under the package without .py), or None."""
    for i, members in enumerate(STAGES):
        if module in members:
            return i
    for i, members in enumerate(STAGES):
        if any(m.endswith("/") and (module + "/").startswith(m) for m in members):
            return i
    return None


def modules():
    """{module: path} for every .py of the package (its data/ scripts are not imported by it)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("").as_posix()
        if not rel.startswith("data/"):
            out[rel.removesuffix("/__init__")] = path
    return out


def _root_exports():
    """{name: module} for what the package's __init__ imports from its modules."""
    tree = ast.parse((ROOT / "__init__.py").read_text())
    return {a.asname or a.name: node.module.removeprefix("mobilenetv2.").replace(".", "/")
            for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
            for a in node.names}


def imports(path, known):
    """The package modules that ``path`` imports (at the top or inside a function), as module
    names of ``known``; a name taken from the package root counts as the module it comes from."""
    exports = _root_exports()
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mobilenetv2":
            base = "/".join(node.module.split(".")[1:])
            for a in node.names:
                sub = f"{base}/{a.name}" if base else a.name
                if sub in known:
                    out.add(sub)
                elif base:
                    out.add(base)
                elif a.name not in ROOT_ITSELF:
                    out.add(exports[a.name])
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("mobilenetv2.").replace(".", "/") for a in node.names
                       if a.name.startswith("mobilenetv2."))
    return out


def test_every_module_has_a_stage():
    assert [m for m in modules() if stage(m) is None] == []


@pytest.mark.parametrize("module", sorted(modules()))
def test_a_module_imports_nothing_of_a_later_stage(module):
    known = modules()
    later = sorted(dep for dep in imports(known[module], known) if stage(dep) > stage(module))
    assert later == [], f"{module} (stage {stage(module)}) imports {later} of a later stage"


def test_the_check_sees_an_upward_import(tmp_path):
    """A reader that imported the model (a later stage) is caught, inside a function too."""
    known = modules()
    reader = tmp_path / "reader.py"
    reader.write_text("def read():\n    from mobilenetv2.model import MobileNetV2\n"
                      "    from mobilenetv2 import hf_preprocess\n")
    assert imports(reader, known) == {"model", "processing/hf_processing"}
    assert stage("model") > stage("formats/loader") and stage("processing/hf_processing") > stage("formats/loader")
    assert stage("engines/plan") == 3 and stage("engines/numpy_kernels") == 0 and stage("batch/job") == 7
