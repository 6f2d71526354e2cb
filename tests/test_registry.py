"""The weights registry: the 22 published variants, where files are looked for, and downloads
from a local HTTP server on 127.0.0.1 (or a file:// folder).  Nothing here touches the internet."""
import http.server
import os
import threading

import numpy as np
import pytest

from mobilenetv2 import MobileNetV2, registry
from mobilenetv2.registry import DownloadError
from mobilenetv2.variants import PUBLISHED
from test_loader import arrays_of, model_layers, write_keras2

OFFICIAL_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
PAYLOAD = bytes(range(256)) * 40 + b"end"  # a small fake file


def keras_name(alpha, rows, include_top):
    """Keras's file name: str() of the float alpha, as keras.applications builds it."""
    return (f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{str(float(alpha))}_{rows}"
            + ("" if include_top else "_no_top") + ".h5")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Keras's home in tmp_path, no weights dir, downloads allowed, no proxy for 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                registry.ENV_DIR, registry.ENV_URL, registry.ENV_NO_DOWNLOAD):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv(registry.ENV_URL, "http://127.0.0.1:9/unused/")  # a closed port
    return tmp_path


class Server:
    """A local HTTP server: routes[path] = (status, body, headers, bytes actually sent or None)."""

    def __init__(self):
        self.routes = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                status, body, headers, send = server.routes.get(self.path, (404, b"no", {}, None))
                self.send_response(status)
                headers = {"Content-Length": str(len(body)), **headers}
                for k, v in headers.items():
                    if v is not None:
                        self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[:send] if send is not None else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/w/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, name, body, headers=None, send=None, status=200):
        self.routes[f"/w/{name}"] = (status, body, headers or {}, send)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    s = Server()
    monkeypatch.setenv(registry.ENV_URL, s.url)
    yield s
    s.close()


def cache(tmp_path):
    return tmp_path / "keras" / "models"


# -- the table -----------------------------------------------------------------------------------
def test_the_22_variants_with_and_without_top():
    vs = registry.variants()
    assert len(vs) == 44
    assert {(v["alpha"], v["rows"]) for v in vs} == set(PUBLISHED)
    for v in vs:
        assert v["file"] == keras_name(v["alpha"], v["rows"], v["include_top"])
        assert v["size"] is None or (isinstance(v["size"], int) and v["size"] > 10 ** 6)
        assert v["sha256"] is None or len(v["sha256"]) == 64
    assert sum(v["include_top"] for v in vs) == 22


def test_names_and_urls(monkeypatch):
    monkeypatch.delenv(registry.ENV_URL)
    assert registry.weights_filename(1, 224) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    assert registry.weights_filename(0.35, 96, include_top=False).endswith("_0.35_96_no_top.h5")
    assert registry.weights_url(0.5, 160, False) == OFFICIAL_BASE + keras_name(0.5, 160, False)
    monkeypatch.setenv(registry.ENV_URL, "http://mirror.example/x")
    assert registry.weights_url(1.4, 224) == "http://mirror.example/x/" + keras_name(1.4, 224, True)


@pytest.mark.parametrize("alpha, rows", [(1.4, 96), (0.25, 224), (1.0, 200), ("big", 224)])
def test_unknown_variant_lists_the_valid_ones(alpha, rows):
    with pytest.raises(ValueError, match=r"no official MobileNetV2 weights.*\(0\.35, 96\).*\(1\.0, 224\), "
                                         r"\(1\.3, 224\), \(1\.4, 224\)$"):
        registry.resolve(alpha, rows)


def test_unknown_rows_names_the_rows_of_that_alpha():
    with pytest.raises(ValueError, match=r"alpha=1\.4, rows=96 \(alpha=1\.4 has rows 224\)"):
        registry.weights_filename(1.4, 96)


# -- finding files -------------------------------------------------------------------------------
def test_weights_dir_comes_before_the_keras_cache(isolated, monkeypatch):
    name = keras_name(0.75, 128, False)
    assert registry.find_weights(0.75, 128, False) is None
    keras_copy = cache(isolated) / name
    keras_copy.parent.mkdir(parents=True)
    keras_copy.write_bytes(b"k")
    assert registry.find_weights(0.75, 128, False) == keras_copy
    own = isolated / "mine" / name
    own.parent.mkdir()
    own.write_bytes(b"m")
    monkeypatch.setenv(registry.ENV_DIR, str(isolated / "mine"))
    assert registry.find_weights(0.75, 128, False) == own
    assert registry.resolve(0.75, 128, False) == own  # found: no download attempted


def test_no_download_says_where_it_looked(isolated, monkeypatch):
    monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, "1")
    monkeypatch.setenv(registry.ENV_DIR, str(isolated / "mine"))
    with pytest.raises(FileNotFoundError) as info:
        registry.resolve(1.0, 224, include_top=False)
    msg = str(info.value)
    assert keras_name(1.0, 224, False) in msg and str(isolated / "mine") in msg
    assert str(cache(isolated)) in msg and registry.ENV_NO_DOWNLOAD in msg
    assert "http://127.0.0.1:9/unused/" + keras_name(1.0, 224, False) in msg
    assert not cache(isolated).exists()


# -- downloading ---------------------------------------------------------------------------------
def test_download_lands_in_the_keras_cache(isolated, server):
    name = keras_name(0.75, 160, True)  # size unknown in the registry
    server.serve(name, PAYLOAD)
    path = registry.resolve(0.75, 160, True, progress=False)
    assert path == cache(isolated) / name
    assert path.read_bytes() == PAYLOAD
    assert os.listdir(cache(isolated)) == [name]
    assert registry.resolve(0.75, 160, True) == path  # second time: found


def test_progress_bar_goes_to_stderr(isolated, server, capsys):
    server.serve(keras_name(0.5, 96, False), PAYLOAD)
    registry.resolve(0.5, 96, False, progress=True)
    err = capsys.readouterr().err
    assert keras_name(0.5, 96, False) in err and "(100%)" in err and err.endswith("\n")


def test_body_shorter_than_content_length_leaves_nothing(isolated, server):
    server.serve(keras_name(0.75, 160, True), PAYLOAD, send=len(PAYLOAD) // 3)
    with pytest.raises(DownloadError, match="broke off"):
        registry.resolve(0.75, 160, True)
    assert os.listdir(cache(isolated)) == []


def test_size_differing_from_the_registry_leaves_nothing(isolated, server):
    v = next(v for v in registry.variants() if v["size"] is not None)
    server.serve(v["file"], PAYLOAD)
    says = f"{len(PAYLOAD)} bytes, the registry says the file has {v['size']}"
    with pytest.raises(DownloadError, match=says):
        registry.resolve(v["alpha"], v["rows"], v["include_top"])
    assert os.listdir(cache(isolated)) == []


def test_size_checked_without_content_length(isolated, server):
    """No Content-Length: the body is checked against the registry's size."""
    v = next(v for v in registry.variants() if v["size"] is not None)
    server.serve(v["file"], PAYLOAD, headers={"Content-Length": None})
    says = f"downloaded {len(PAYLOAD)} bytes .* says the file has {v['size']}"
    with pytest.raises(DownloadError, match=says):
        registry.resolve(v["alpha"], v["rows"], v["include_top"])
    assert os.listdir(cache(isolated)) == []


def test_checksum_mismatch_leaves_nothing(isolated, server):
    v = next(v for v in registry.variants() if v["sha256"] is not None)
    server.serve(v["file"], bytes(v["size"]))  # right size, wrong bytes
    with pytest.raises(DownloadError, match="SHA-256"):
        registry.resolve(v["alpha"], v["rows"], v["include_top"])
    assert os.listdir(cache(isolated)) == []


def test_http_404(isolated, server):
    with pytest.raises(DownloadError, match=r"cannot download http://127\.0\.0\.1:\d+/w/\S+_1\.3_224\.h5: "
                                            r"HTTP 404"):
        registry.resolve(1.3, 224)
    assert not cache(isolated).exists() or os.listdir(cache(isolated)) == []


def test_interrupt_during_download_leaves_nothing(isolated, server, monkeypatch):
    server.serve(keras_name(0.75, 160, True), PAYLOAD * 300)  # several chunks

    def interrupt(self, done, final=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry._Progress, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        registry.resolve(0.75, 160, True, progress=True)
    assert os.listdir(cache(isolated)) == []


def test_file_url_base(isolated, monkeypatch):
    mirror = isolated / "mirror"
    mirror.mkdir()
    name = keras_name(0.35, 128, False)
    (mirror / name).write_bytes(PAYLOAD)
    monkeypatch.setenv(registry.ENV_URL, mirror.as_uri())
    assert registry.resolve(0.35, 128, False).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="cannot download file://"):
        registry.resolve(0.35, 160, False)
    assert os.listdir(cache(isolated)) == [name]


def test_imagenet_model_downloads_and_loads(isolated, server):
    """weights='imagenet' end to end: the model resolves the 0.5/128 no-top file, the server
    sends a Keras .h5 written here, and the model holds exactly its arrays."""
    layers = model_layers(0.5, include_top=False, seed=3)
    src = isolated / "src.h5"
    write_keras2(src, layers)
    server.serve(keras_name(0.5, 128, False), src.read_bytes())
    model = MobileNetV2((128, 128, 3), alpha=0.5, include_top=False, weights="imagenet")
    got = [layer.get_weights() for layer in model.weighted_layers()]
    want = arrays_of(layers)
    assert [len(g) for g in got] == [len(w) for w in want]
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            np.testing.assert_array_equal(a, b)
    assert (cache(isolated) / keras_name(0.5, 128, False)).is_file()
