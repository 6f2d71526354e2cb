"""Every exception the package raises on purpose is a mobilenetv2.errors.Error, and keeps the
built-in base that existing ``except ValueError`` / ``except OSError`` code relies on."""
import importlib

import pytest

import mobilenetv2
from mobilenetv2.errors import Error

# (module, class name, the built-in base it must keep)
CLASSES = [
    ("mobilenetv2.errors", "WeightsError", ValueError),
    ("mobilenetv2.errors", "ImageError", ValueError),
    ("mobilenetv2.errors", "ArgumentError", ValueError),
    ("mobilenetv2.errors", "DownloadError", OSError),
    ("mobilenetv2.errors", "OutputPathError", OSError),
    ("mobilenetv2.pool", "ThreadsError", ValueError),
    ("mobilenetv2.safetensors", "SafetensorsError", ValueError),
    ("mobilenetv2.hf", "CheckpointError", ValueError),
    ("mobilenetv2.hf_config", "ConfigError", ValueError),
    ("mobilenetv2.tools.compare.errors", "CompareError", ValueError),
    ("mobilenetv2.tools.compare.errors", "MissingExtra", ImportError),
    ("mobilenetv2.native", "EngineUnavailable", RuntimeError),
    ("mobilenetv2.files", "NotRegularFile", ValueError),
    ("mobilenetv2.ray", "RayJobFailed", RuntimeError),
]


@pytest.mark.parametrize("module,name,builtin", CLASSES, ids=[c[1] for c in CLASSES])
def test_each_exception_is_an_error_and_keeps_its_base(module, name, builtin):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, Error)
    assert issubclass(cls, builtin)


@pytest.mark.parametrize("name", ["Error", "WeightsError", "ImageError", "ArgumentError", "DownloadError",
                                  "OutputPathError", "ThreadsError", "SafetensorsError", "CheckpointError",
                                  "ConfigError", "CompareError", "EngineUnavailable", "NotRegularFile"])
def test_exported_from_the_package(name):
    cls = getattr(mobilenetv2, name)
    assert name in mobilenetv2.__all__
    assert cls is Error or issubclass(cls, Error)


def test_raised_instances_are_caught_by_error(tmp_path):
    from mobilenetv2.safetensors import SafetensorsFile
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 4)          # shorter than the 8-byte header length
    with pytest.raises(Error, match="model.safetensors"):
        SafetensorsFile(bad)
    from mobilenetv2.hf_config import read_json
    cfg = tmp_path / "config.json"
    cfg.write_text("[1, 2]")
    with pytest.raises(Error, match="config.json"):
        read_json(cfg, "config.json")
