"""The weights registry: the 22 published variants, where files are looked for, and downloads
from a local HTTP server on 127.0.0.1 (or a file:// folder).  Nothing here touches the internet."""
import http.server
import json
import os
import re
import signal
import socketserver
import stat
import subprocess
import sys
import time
import threading

import numpy as np
import pytest

from conftest import cli_error_lines
from mobilenetv2 import MobileNetV2
from mobilenetv2.formats import registry
from mobilenetv2.formats.registry import DownloadError
from mobilenetv2.network.variants import PUBLISHED
from test_loader import arrays_of, model_layers, write_keras2

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

OFFICIAL_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
def _small_h5():
    import io
    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("x", data=np.arange(2500, dtype=np.float32))
    return buf.getvalue()


PAYLOAD = _small_h5()  # a small complete HDF5 file (not a weights file: downloads check only that)


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
                route = server.routes.get(self.path, (404, b"no", {}, None))
                if callable(route):  # a handler of its own: trickles, endless bodies, stalls
                    route(self)
                    self.close_connection = True
                    return
                status, body, headers, send = route
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

    def serve_with(self, name, handler):
        self.routes[f"/w/{name}"] = handler

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
        assert v["sha256"] is None or re.fullmatch("[0-9a-f]{64}", v["sha256"])
        # every entry says what is checked, and where an entry is unverified, why
        want = "size+sha256" if v["sha256"] else "size" if v["size"] else False
        assert v["verified"] == want, v["file"]
        assert v["source"] and (v["verified"] or v["source"].startswith("none: "))
    assert sum(v["include_top"] for v in vs) == 22


def test_a_source_checkout_reads_the_table_beside_the_package(monkeypatch):
    """Not installed (a checkout on PYTHONPATH, as .ci's NumPy-only run uses it), there is no
    mobilenetv2._registry package: the table is then the checkout's weights/registry.json, the
    same 44 entries, read from the folder above the package's."""
    from pathlib import Path
    real = registry.importlib.resources.files

    def files(package):
        if package == "mobilenetv2._registry":
            raise ModuleNotFoundError(f"No module named {package!r}")
        return real(package)
    monkeypatch.setattr(registry.importlib.resources, "files", files)
    registry._table.cache_clear()
    try:
        here = Path(__file__).resolve().parent.parent / "weights" / "registry.json"
        assert registry._table() == json.loads(here.read_text())
        assert len(registry.variants()) == 44
    finally:
        monkeypatch.undo()
        registry._table.cache_clear()


def test_all_variants_run_largest_first():
    """`bench --variants all` and the unknown-variant message list the 22 as the paper's table does:
    width multiplier from 1.4 down, each width's resolutions from 224 down."""
    from mobilenetv2.network.variants import VARIANTS, variant_name
    names = [variant_name(*v) for v in VARIANTS]
    assert names[:7] == ["1.4_224", "1.3_224", "1.0_224", "1.0_192", "1.0_160", "1.0_128", "1.0_96"]
    assert names[-5:] == ["0.35_224", "0.35_192", "0.35_160", "0.35_128", "0.35_96"]
    assert len(names) == len(set(names)) == 22


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
    assert keras_name(0.5, 96, False) in err and err.endswith("\n")
    mb = f"{len(PAYLOAD) / 1e6:.1f}"
    assert err.endswith(f"{keras_name(0.5, 96, False)}: {mb}/{mb} MB (100%)\n")


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
    server.serve(v["file"], registry.HDF5_MAGIC + bytes(v["size"] - 8))  # right size, wrong bytes
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


# -- what a hostile or broken server sends ------------------------------------------------------
UNKNOWN = (0.75, 160, True)  # an entry with no recorded size or hash
KNOWN = next((v["alpha"], v["rows"], v["include_top"]) for v in registry.variants()
             if v["size"] is not None and v["sha256"] is None)


def only_good_files(folder, allowed=()):
    """The cache holds nothing but ``allowed``: no part file, no wrong file."""
    names = sorted(os.listdir(folder)) if folder.exists() else []
    assert names == sorted(allowed), names


def test_html_error_page_with_status_200_is_refused(isolated, server):
    server.serve(keras_name(*UNKNOWN), b"<!DOCTYPE html><html><body>Service unavailable</body></html>")
    with pytest.raises(DownloadError, match=r"did not send an HDF5 file \(it starts with b'<!DOCTYP'; an error page"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated))


def test_a_compressed_body_is_refused_as_such(isolated, server):
    """A mirror serving a gzip-encoded object (stored so, sent whatever the request asks) was
    refused as 'did not send an HDF5 file (it starts with b'\\x1f\\x8b...'; an error page?)'."""
    import gzip
    server.serve(keras_name(*UNKNOWN), gzip.compress(PAYLOAD), headers={"Content-Encoding": "gzip"})
    with pytest.raises(DownloadError, match="sent the file with Content-Encoding 'gzip'"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated))


def test_truncated_body_without_content_length_is_refused(isolated, server):
    """No size in the registry and no Content-Length: the HDF5 superblock's end-of-file address
    says the body is short."""
    layers = model_layers(0.35, include_top=False, seed=1)
    write_keras2(isolated / "src.h5", layers)
    body = (isolated / "src.h5").read_bytes()
    server.serve(keras_name(*UNKNOWN), body[:len(body) // 2], headers={"Content-Length": None})
    with pytest.raises(DownloadError, match="did not send a complete HDF5 file .*truncated file"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated))


def endless(handler):
    handler.send_response(200)
    handler.end_headers()  # no Content-Length: data until the client hangs up
    chunk = registry.HDF5_MAGIC + bytes(1 << 16)
    try:
        while True:
            handler.wfile.write(chunk)
    except OSError:
        pass


def test_endless_body_stops_at_the_registry_size(isolated, server):
    v = next(v for v in registry.variants() if v["size"] is not None)
    server.serve_with(v["file"], endless)
    with pytest.raises(DownloadError, match=f"sent more than {v['size']} bytes, the registry's size"):
        registry.resolve(v["alpha"], v["rows"], v["include_top"])
    only_good_files(cache(isolated))


def test_endless_body_of_an_unverified_entry_stops_at_the_cap(isolated, server, monkeypatch):
    monkeypatch.setattr(registry, "MAX_UNKNOWN_SIZE", 1 << 20)
    server.serve_with(keras_name(*UNKNOWN), endless)
    with pytest.raises(DownloadError, match=f"sent more than {1 << 20} bytes, more than any MobileNetV2"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated))


def test_content_length_past_the_cap_is_refused_before_reading(isolated, server):
    server.serve(keras_name(*UNKNOWN), PAYLOAD, headers={"Content-Length": str(registry.MAX_UNKNOWN_SIZE + 1)})
    with pytest.raises(DownloadError, match="more than any MobileNetV2 weights file"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated))


def test_trickling_server_hits_the_deadline(isolated, server, monkeypatch):
    """One byte every 20 ms never trips a per-read timeout; the overall deadline stops it."""
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PAYLOAD)))
        handler.end_headers()
        try:
            for b in PAYLOAD:
                handler.wfile.write(bytes([b]))
                handler.wfile.flush()
                time.sleep(0.02)
        except OSError:
            pass

    monkeypatch.setattr(registry, "DEADLINE", 0.5)
    server.serve_with(keras_name(*UNKNOWN), trickle)
    start = time.monotonic()
    with pytest.raises(DownloadError, match="did not finish within its deadline"):
        registry.resolve(*UNKNOWN)
    assert time.monotonic() - start < 3
    only_good_files(cache(isolated))


def _trickle_raw(head, byte):
    """A handler that writes ``head`` raw, then ``byte`` every 20 ms until the client hangs up."""
    def handler(h):
        try:
            h.wfile.write(head)
            for _ in range(5000):
                h.wfile.write(byte)
                h.wfile.flush()
                time.sleep(0.02)
        except OSError:
            pass
    return handler


@pytest.mark.parametrize("head, byte", [
    (b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a"),  # a header line that never ends
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n" + b"\x89HDF\r\n\x1a\n" + b"\r\n",
     b"0"),  # a chunk-size line of leading zeros that never ends
], ids=["headers", "chunk-size-line"])
def test_trickle_outside_the_body_hits_the_deadline(isolated, server, monkeypatch, head, byte):
    """Before, the deadline was looked at only between body reads: a server trickling its
    headers or a chunk-size line kept a download going past any deadline (each byte restarts
    the socket's timeout); a watchdog now shuts the socket down at the deadline."""
    monkeypatch.setattr(registry, "DEADLINE", 0.5)
    server.serve_with(keras_name(*UNKNOWN), _trickle_raw(head, byte))
    start = time.monotonic()
    with pytest.raises(DownloadError, match="did not finish within its deadline"):
        registry.resolve(*UNKNOWN)
    assert time.monotonic() - start < 3
    only_good_files(cache(isolated))


@pytest.mark.parametrize("target, refused", [  # urllib joins a relative Location before this
    ("http://mirror.example/w.h5", True), ("HTTP://mirror.example/w.h5", True),
    ("https://cdn.example/w.h5", False), ("https://storage.example/other/w.h5", False),
    ("http://user:pa55@mirror.example/w.h5", True)])  # said without the credentials it holds
def test_redirect_from_https_to_http_is_refused(target, refused):
    """Followed as urllib follows them, except a downgrade from https to plain http."""
    import email.message
    import urllib.request
    req = urllib.request.Request("https://storage.example/models/w.h5")
    handler = registry._NoDowngrade()
    if refused:
        with pytest.raises(DownloadError, match="(?i)redirects to http://mirror.example/w.h5, from https to http"):
            handler.redirect_request(req, None, 302, "Found", email.message.Message(), target)
    else:
        new = handler.redirect_request(req, None, 302, "Found", email.message.Message(), target)
        assert new.full_url.startswith("https://")


def test_a_refused_redirect_names_its_source_without_the_mirrors_credentials():
    """The mirror's own URL may carry user:password: the refusal shows where it came from, the
    URL a browser shows, never the password."""
    import email.message
    import urllib.request
    req = urllib.request.Request("https://mirr0r-user:s3cret@storage.example/models/w.h5")
    for target, why in (("http://mirror.example/w.h5", "from https to http"),
                        ("ftp://mirror.example/w.h5", "only http and https")):
        with pytest.raises(DownloadError) as info:
            registry._NoDowngrade().redirect_request(req, None, 302, "Found", email.message.Message(), target)
        said = str(info.value)
        assert said.startswith(f"https://storage.example/models/w.h5 redirects to {target}") and why in said
        assert "s3cret" not in said and "mirr0r-user" not in said


def test_a_redirect_to_ftp_is_refused(isolated, server):
    """urllib follows a redirect to ftp://, outside the deadline's watch on the sockets."""
    server.serve(keras_name(*UNKNOWN), b"", headers={"Location": "ftp://127.0.0.1:9/w.h5"}, status=302)
    with pytest.raises(DownloadError, match=r"redirects to ftp://127\.0\.0\.1:9/w\.h5: only http and https"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated))


@pytest.mark.parametrize("proxy, shown", [
    ("http://proxy-user:pr0xy-pw@127.0.0.1:9", "http://127.0.0.1:9"),  # a closed port
    ("proxy-user:pr0xy-pw@127.0.0.1:9", "127.0.0.1:9"),                # no scheme://, as urllib takes it
    ("http://proxy-user:pr0xy/pw@127.0.0.1:9", "http://127.0.0.1:9"),  # urllib: host after the first '@'
    ("http:/proxy-user:pr0xy-pw@127.0.0.1:9", "127.0.0.1:9"),          # urllib's ValueError quotes it
], ids=["url", "no-scheme", "slash-in-password", "unreadable"])
def test_a_proxy_that_refuses_is_named_without_its_credentials(isolated, server, monkeypatch, proxy, shown):
    """The error read as the server's ('cannot download http://host/...: Connection refused')
    where the proxy the environment names refused.  A proxy without scheme://, or whose password
    holds a '/', was shown with its password, as was one urllib could not read (in its error)."""
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(DownloadError, match=re.escape(
            f"cannot download {server.url}{keras_name(*UNKNOWN)} (through the proxy {shown}, "
            "from $http_proxy): ")) as info:
        registry.resolve(*UNKNOWN)
    assert "pr0xy" not in str(info.value)


class RawServer:
    """A TCP server on 127.0.0.1 that answers every connection with ``reply`` bytes."""

    def __init__(self, reply):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.recv(65536)
                try:
                    self.request.sendall(reply)
                except OSError:
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/w/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("reply", [
    b"NONSENSE\r\n\r\n",                                                     # bad status line
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",            # header line too long
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",  # too many
    b"",                                                                     # closed at once
], ids=["bad-status-line", "long-header", "too-many-headers", "empty-reply"])
def test_broken_http_replies_are_download_errors(isolated, monkeypatch, reply):
    raw = RawServer(reply)
    monkeypatch.setenv(registry.ENV_URL, raw.url)
    try:
        with pytest.raises(DownloadError, match=r"cannot download http://127\.0\.0\.1"):
            registry.resolve(*UNKNOWN)
    finally:
        raw.close()
    only_good_files(cache(isolated))


KILL_SCRIPT = """
import sys
from mobilenetv2.formats import registry
registry.resolve(0.75, 160, True, progress=False)
"""


def test_killed_mid_download_then_rerun_leaves_only_the_good_file(isolated, server):
    """SIGKILL while the body is half sent leaves a .part file (nothing can remove it then);
    the next download removes it, and the cache ends with the one good file."""
    release = threading.Event()

    def stall_half_way(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PAYLOAD)))
        handler.end_headers()
        handler.wfile.write(PAYLOAD[:len(PAYLOAD) // 2])
        handler.wfile.flush()
        release.wait(30)

    server.serve_with(keras_name(*UNKNOWN), stall_half_way)
    env = dict(os.environ, PYTHONPATH=str(registry.Path(registry.__file__).resolve().parents[2]))
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT], env=env)
    folder = cache(isolated)
    deadline = time.monotonic() + 30
    while not (folder.exists() and any(n.endswith(".part") and os.path.getsize(folder / n)
                                       for n in os.listdir(folder))):
        assert time.monotonic() < deadline and child.poll() is None, "the child never started writing"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    release.set()
    assert [n for n in os.listdir(folder) if n.endswith(".part")]  # what the kill left
    assert registry.find_weights(*UNKNOWN) is None  # a part file is never taken for the weights
    server.serve(keras_name(*UNKNOWN), PAYLOAD)
    path = registry.resolve(*UNKNOWN)
    assert path.read_bytes() == PAYLOAD
    only_good_files(folder, [keras_name(*UNKNOWN)])


def test_a_download_in_progress_keeps_its_part_file(isolated):
    """A part file whose lock another download holds is not stale: it is left alone."""
    import fcntl
    folder = cache(isolated)
    folder.mkdir(parents=True)
    part = folder / f".{keras_name(*UNKNOWN)}.abc.part"
    with open(part, "wb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        registry._clean_stale_parts(folder, keras_name(*UNKNOWN))
        assert part.exists()
    registry._clean_stale_parts(folder, keras_name(*UNKNOWN))
    assert not part.exists()


# -- files already there ----------------------------------------------------------------------
def test_wrong_file_in_the_keras_cache_is_replaced(isolated, server, monkeypatch):
    v = next(v for v in registry.variants() if v["sha256"] is not None)
    good = registry.HDF5_MAGIC + bytes(v["size"] - 8)
    target = cache(isolated) / v["file"]
    target.parent.mkdir(parents=True)
    target.write_bytes(b"<html>an error page saved by an old downloader</html>")
    server.serve(v["file"], good)
    import hashlib
    entry = registry._entry(v["alpha"], v["rows"], v["include_top"])
    monkeypatch.setitem(entry, "sha256", hashlib.sha256(good).hexdigest())
    assert registry.resolve(v["alpha"], v["rows"], v["include_top"]) == target
    assert target.read_bytes() == good
    only_good_files(target.parent, [v["file"]])


def test_a_wrong_file_in_the_keras_cache_stays_when_the_download_fails(isolated, monkeypatch, capsys):
    """It was deleted before the download, which then failed (no network): the user's file gone
    and the error only 'cannot download'.  Now it stays, and the error says what to do."""
    v = next(v for v in registry.variants() if v["size"] is not None)
    target = cache(isolated) / v["file"]
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    monkeypatch.setenv(registry.ENV_URL, (isolated / "no-such-mirror").as_uri())
    with pytest.raises(DownloadError) as info:
        registry.resolve(v["alpha"], v["rows"], v["include_top"])
    msg = str(info.value)
    assert f"the wrong file {str(target)!r} is kept" in msg
    assert f"put the official file in {target.parent}" in msg and "--weights" in msg and registry.ENV_DIR in msg
    assert "is not the official" in capsys.readouterr().err
    assert target.read_bytes() == PAYLOAD


def test_wrong_file_in_the_weights_dir_is_an_error_naming_it(isolated, monkeypatch):
    v = next(v for v in registry.variants() if v["size"] is not None)
    mine = isolated / "mine"
    mine.mkdir()
    (mine / v["file"]).write_bytes(PAYLOAD)
    monkeypatch.setenv(registry.ENV_DIR, str(mine))
    with pytest.raises(DownloadError, match=re.escape(f"weights file {str(mine / v['file'])!r} is not the "
                                                      f"official {v['file']}: it has {len(PAYLOAD)} bytes")):
        registry.resolve(v["alpha"], v["rows"], v["include_top"])
    assert (mine / v["file"]).read_bytes() == PAYLOAD  # the user's file is never deleted


@pytest.mark.parametrize("value, off", [("1", True), ("yes", True), ("anything", True), ("", False),
                                        ("0", False), ("false", False), ("No", False), (" off ", False)])
def test_no_download_is_read_as_a_switch(isolated, monkeypatch, value, off):
    """MOBILENETV2_NO_DOWNLOAD=false turned downloading off, as every value but '' and '0' did."""
    monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, value)
    with pytest.raises((FileNotFoundError, DownloadError)) as info:  # the mirror is a closed port
        registry.resolve(1.0, 224, include_top=False)
    assert isinstance(info.value, FileNotFoundError) is off
    assert ("downloading is off" in str(info.value)) is off


def test_info_says_what_loading_does_with_a_wrong_file(isolated, monkeypatch, capsys):
    """A wrong file in Keras's cache is downloaded over (where downloading is on), one in
    $MOBILENETV2_WEIGHTS_DIR refused: info said 'loading refuses it' of both."""
    from mobilenetv2.cli import main
    v = next(v for v in registry.variants() if v["size"] is not None and v["include_top"])
    target = cache(isolated) / v["file"]
    target.parent.mkdir(parents=True)
    target.write_bytes(PAYLOAD)
    variant = f"{v['alpha']}_{v['rows']}"
    assert main(["info"]) == 0
    assert f"wrong file: {target} ({variant}, with top): it has {len(PAYLOAD)} bytes, the registry says " \
           f"{v['size']}; loading downloads the official file over it" in capsys.readouterr().out
    monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, "1")
    assert main(["info"]) == 0
    assert f"({variant}, with top): it has {len(PAYLOAD)} bytes, the registry says {v['size']}; loading " \
           "refuses it" in capsys.readouterr().out
    monkeypatch.delenv(registry.ENV_NO_DOWNLOAD)
    mine = isolated / "mine"
    mine.mkdir()
    (mine / v["file"]).write_bytes(PAYLOAD)
    monkeypatch.setenv(registry.ENV_DIR, str(mine))
    assert main(["info", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["variants"] if r["variant"] == variant)
    assert row["weights_top"] == str(mine / v["file"]) and row["weights_top_action"] == "loading refuses it"


def test_a_file_is_hashed_once_per_process_until_it_changes(isolated, monkeypatch):
    import hashlib
    path = isolated / "f.h5"
    path.write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    calls = []
    real = registry.hashlib.sha256

    class Counting:
        @staticmethod
        def sha256(*a):
            calls.append(1)
            return real(*a)

    monkeypatch.setattr(registry, "hashlib", Counting)
    assert registry.verify_file(path, len(PAYLOAD), digest) is None
    assert registry.verify_file(path, len(PAYLOAD), digest) is None
    assert len(calls) == 1
    path.write_bytes(PAYLOAD[::-1])  # same size, new bytes, new mtime
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    assert "SHA-256" in registry.verify_file(path, len(PAYLOAD), digest)
    assert len(calls) == 2


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_downloaded_file_has_the_umask_permissions(isolated, server, mask):
    server.serve(keras_name(*UNKNOWN), PAYLOAD)
    old = os.umask(mask)
    try:
        path = registry.resolve(*UNKNOWN)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_bytes_appended_to_a_valid_file_are_refused(isolated, server):
    """No size or hash recorded: the HDF5 superblock's end-of-file address still says where the
    file ends, so a valid file with anything appended is not put in place."""
    server.serve(keras_name(*UNKNOWN), PAYLOAD + b"<script>appended</script>")
    with pytest.raises(DownloadError, match=f"{len(PAYLOAD) + 25} bytes and its HDF5 superblock says "
                                            f"{len(PAYLOAD)}: bytes were appended"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated))


def test_progress_bar_without_a_known_total(isolated, server, capsys):
    server.serve(keras_name(*UNKNOWN), PAYLOAD, headers={"Content-Length": None})
    registry.resolve(*UNKNOWN, progress=True)
    err = capsys.readouterr().err
    assert err.endswith(f": {len(PAYLOAD) / 1e6:.1f} MB\n") and "%" not in err


# -- a cache the file system refuses ----------------------------------------------------------
def test_a_cache_folder_that_is_a_file_is_a_download_error_naming_it(isolated, server):
    """mkdir of Keras's cache folder failed with a bare FileExistsError, before any download."""
    server.serve(keras_name(*UNKNOWN), PAYLOAD)
    (isolated / "keras").mkdir()
    cache(isolated).write_bytes(b"not a folder")
    with pytest.raises(DownloadError, match=re.escape(f"cannot save the download of {server.url}")
                       + ".*File exists: " + re.escape(repr(str(cache(isolated))))) as info:
        registry.resolve(*UNKNOWN)
    assert "pass weights=" in str(info.value)
    assert cache(isolated).read_bytes() == b"not a folder"


def test_a_folder_where_the_file_goes_is_a_download_error_naming_it(isolated, server):
    """The whole download was made, then os.replace failed with a bare IsADirectoryError."""
    server.serve(keras_name(*UNKNOWN), PAYLOAD)
    (cache(isolated) / keras_name(*UNKNOWN)).mkdir(parents=True)
    with pytest.raises(DownloadError, match=r"cannot save the download of .* Is a directory"):
        registry.resolve(*UNKNOWN)
    only_good_files(cache(isolated), [keras_name(*UNKNOWN)])  # the folder, and no part file


FULL_DISK_SCRIPT = """
import resource
from mobilenetv2.formats import registry
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))  # Python ignores SIGXFSZ: writes fail
try:
    registry.resolve(0.75, 160, True, progress=False)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("copies", [20, 1])  # one fails in a write, one in the last flush (by chunk sizes)
def test_a_full_disk_is_said_as_such_and_leaves_nothing(isolated, server, copies):
    """A write refused by the file system (EFBIG here, ENOSPC on a full disk) was said as
    'download ... broke off' (blaming the server), or was a bare OSError naming no file."""
    limit = 4000
    server.serve(keras_name(*UNKNOWN), PAYLOAD * copies)
    env = dict(os.environ, PYTHONPATH=str(registry.Path(registry.__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT.format(limit=limit)], env=env,
                         capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("DownloadError cannot save the download of "), out
    assert "File too large" in out and str(cache(isolated) / keras_name(*UNKNOWN)) in out, out
    assert "broke off" not in out
    only_good_files(cache(isolated))


# -- a mirror with credentials in its URL ------------------------------------------------------
def basic_auth_route(expected, body, seen, send=None):
    """A route that sends ``body`` (its first ``send`` bytes, where given) to a request with that
    Basic Authorization, else 401."""
    def route(handler):
        seen.append(handler.headers.get("Authorization"))
        if seen[-1] == expected:
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[:send])
        else:
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="mirror"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
    return route


def test_credentials_in_the_mirror_url_are_sent_and_never_shown(isolated, server, monkeypatch):
    """user:password@ in $MOBILENETV2_WEIGHTS_URL went into the host name (a DNS error for
    'user:s3cret@127.0.0.1'), and every error message printed the password."""
    import base64
    seen = []
    expected = "Basic " + base64.b64encode(b"us@er:s3:cret").decode()  # RFC 7617, from the decoded pair
    for name in (keras_name(*UNKNOWN), keras_name(0.5, 96, True)):
        server.serve_with(name, basic_auth_route(expected, PAYLOAD, seen))
    host = server.url.split("//", 1)[1]
    monkeypatch.setenv(registry.ENV_URL, f"http://us%40er:s3%3Acret@{host}")
    assert registry.resolve(*UNKNOWN).read_bytes() == PAYLOAD
    assert seen == [expected]

    monkeypatch.setenv(registry.ENV_URL, f"http://us%40er:wrong-s3cret@{host}")
    with pytest.raises(DownloadError, match="HTTP 401") as info:
        registry.resolve(0.5, 96, True)
    monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, "1")
    with pytest.raises(FileNotFoundError) as off:
        registry.resolve(0.5, 96, True)
    for message in (str(info.value), str(off.value)):
        assert f"http://{host}{keras_name(0.5, 96, True)}" in message
        assert "s3cret" not in message and "us%40er" not in message


@pytest.mark.parametrize("base, shown", [
    ("https://us%40er:pa55%2Fw0rd@mirror.example:8443/keras%2Dapps/", "https://mirror.example:8443/keras%2Dapps/"),
    ("HTTP://user:pa55@[fe80::1%25eth0]:8080/w", "HTTP://[fe80::1%25eth0]:8080/w/"),
    ("http://user:pa55@w0rd@mirror.example/w/", "http://mirror.example/w/"),  # '@' in the password
    ("http://:pa55@mirror.example/w/", "http://mirror.example/w/"),
    ("http://mirror.example/@pa55/", "http://mirror.example/@pa55/"),  # an '@' in the path is no user
])
def test_urls_returned_are_the_mirror_url_without_its_credentials(monkeypatch, base, shown):
    """variants() and weights_url() returned $MOBILENETV2_WEIGHTS_URL with its password; the URL
    they return now is the one a browser shows, every other character as given (the scheme's
    case, percent-encoding, port, IPv6 brackets and zone)."""
    monkeypatch.setenv(registry.ENV_URL, base)
    assert registry.weights_url(1.0, 224) == shown + keras_name(1.0, 224, True)
    assert [v["url"] for v in registry.variants()] == [shown + v["file"] for v in registry.variants()]
    if "@pa55" not in shown:
        assert "pa55" not in repr(registry.variants())


def test_a_mirror_password_is_in_no_url_message_warning_or_output(isolated, server, monkeypatch, capsys):
    """The download with the password succeeds; then no URL returned, no error of a failed
    download (its message and args), no warning, nothing on stderr (the progress bar) and
    nothing `mobilenetv2 info` prints holds it."""
    import base64
    import warnings
    password = "pa55/w0rd"
    good = "Basic " + base64.b64encode(f"user:{password}".encode()).decode()
    host = server.url.split("//", 1)[1]
    seen = []
    sized = next(v for v in registry.variants() if v["size"] is not None and v["sha256"] is None)
    hashed = next(v for v in registry.variants() if v["sha256"] is not None)
    broken = keras_name(0.5, 96, True)
    for name in (keras_name(*UNKNOWN), keras_name(*UNKNOWN[:2], False)):  # the second: a 401
        server.serve_with(name, basic_auth_route(good, PAYLOAD, seen))
    server.serve_with(sized["file"], basic_auth_route(good, PAYLOAD, seen))             # wrong size
    server.serve_with(hashed["file"], basic_auth_route(                                 # wrong bytes
        good, registry.HDF5_MAGIC + bytes(hashed["size"] - 8), seen))
    server.serve_with(broken, basic_auth_route(good, PAYLOAD, seen, send=len(PAYLOAD) // 3))
    mirror = f"http://user:pa55%2Fw0rd@{host}"
    monkeypatch.setenv(registry.ENV_URL, mirror)
    errors = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert registry.resolve(*UNKNOWN, progress=True).read_bytes() == PAYLOAD
        assert seen == [good]
        urls = [registry.weights_url(*UNKNOWN)] + [v["url"] for v in registry.variants()]
        for what, variant, expect in [
                ("404", (1.3, 224, True), "HTTP 404"),
                ("size", (sized["alpha"], sized["rows"], sized["include_top"]), "the registry says the file has"),
                ("sha256", (hashed["alpha"], hashed["rows"], hashed["include_top"]), "SHA-256"),
                ("broken", (0.5, 96, True), "broke off")]:
            with pytest.raises(DownloadError, match=expect) as info:
                registry.resolve(*variant)
            errors[what] = info.value
        monkeypatch.setenv(registry.ENV_URL, f"http://user:pa55-wr0ng@{host}")
        with pytest.raises(DownloadError, match="HTTP 401") as info:
            registry.resolve(*UNKNOWN[:2], False)
        errors["401"] = info.value
        monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, "1")
        with pytest.raises(FileNotFoundError, match="downloading is off") as info:
            registry.resolve(*UNKNOWN[:2], False)
        errors["off"] = info.value
    assert urls[0] == f"http://{host}{keras_name(*UNKNOWN)}" and urls[0] in urls[1:]
    for what, exc in errors.items():
        assert f"http://{host}" in str(exc), what
        assert "pa55" not in str(exc) and "pa55" not in repr(exc.args), (what, str(exc))
    assert all("pa55" not in str(w.message) for w in caught)
    err = capsys.readouterr().err
    assert keras_name(*UNKNOWN) in err and "pa55" not in err  # the progress bar names the file only

    env = dict(os.environ, PYTHONPATH=str(registry.Path(registry.__file__).resolve().parents[2]))
    env[registry.ENV_URL] = mirror
    env.pop(registry.ENV_NO_DOWNLOAD)
    downloaded = str(cache(isolated) / keras_name(*UNKNOWN))
    for args, says in ((["info"], "found/-"), (["info", "--json"], json.dumps(downloaded))):
        run = subprocess.run([sys.executable, "-m", "mobilenetv2"] + args, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert says in run.stdout and "pa55" not in run.stdout + run.stderr


def test_credentials_are_not_sent_where_the_mirror_redirects(isolated, server, monkeypatch):
    other, seen = Server(), []
    try:
        other.serve_with(keras_name(*UNKNOWN), basic_auth_route(None, PAYLOAD, seen))
        server.serve(keras_name(*UNKNOWN), b"", headers={"Location": other.url + keras_name(*UNKNOWN)},
                     status=302)
        monkeypatch.setenv(registry.ENV_URL, server.url.replace("//", "//user:s3cret@", 1))
        assert registry.resolve(*UNKNOWN).read_bytes() == PAYLOAD
        assert seen == [None]
    finally:
        other.close()


@pytest.mark.parametrize("userinfo", ["mirr0r-user:s3cr/3t", "mirr0r-user:s3cr?3t", "mirr0r-user:s3cr#3t",
                                      "localhost:/s3cr3t",  # (were it read: a closed local port)
                                      "mirr0r-user:1234/s3cr3t", "mirr0r/us3r:s3cr3t",  # (a port that is a number)
                                      "mirr0r-user:1234?s3cr3t"])
def test_a_slash_question_mark_or_hash_in_the_mirror_password_is_refused_unshown(
        isolated, server, monkeypatch, userinfo, tmp_path):
    """urllib ends the host part at the first '/', '?' or '#': 'http://u:s3cr/3t@host/w/' was a
    request to host 'u', port 's3cr', and every message quoted the URL whole, password and all.
    Such a URL is refused before any request, by a message that repeats none of it."""
    host = server.url.split("//", 1)[1]
    seen = []
    server.serve_with(keras_name(*UNKNOWN), basic_auth_route(None, PAYLOAD, seen))
    mirror = f"http://{userinfo}@{host}"
    monkeypatch.setenv(registry.ENV_URL, mirror)
    secrets = (userinfo.partition(":")[0], "s3cr", "3t", "127.0.0.1", str(server.httpd.server_address[1]))
    errors = []
    for call in (lambda: registry.resolve(*UNKNOWN), lambda: registry.weights_url(*UNKNOWN),
                 registry.variants, lambda: registry.download_file(mirror + "x.h5", tmp_path / "x.h5")):
        with pytest.raises(DownloadError, match="percent-encode '/', '[?]', '#' and '@' in the user name "
                                                "and password") as info:
            call()
        errors.append(info.value)
    for text in [str(e) for e in errors] + [repr(e) for e in errors]:
        assert not [s for s in secrets if s in text], text
    assert seen == [] and not (tmp_path / "x.h5").exists() and not cache(isolated).exists()

    # a file found needs no URL: it is used as it is
    found = tmp_path / "dir"
    found.mkdir()
    (found / keras_name(*UNKNOWN)).write_bytes(PAYLOAD)
    monkeypatch.setenv(registry.ENV_DIR, str(found))
    assert registry.resolve(*UNKNOWN) == found / keras_name(*UNKNOWN)
    monkeypatch.delenv(registry.ENV_DIR)

    # the command line: one line on stderr, exit 2, nothing of the URL in it
    from PIL import Image
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(image)
    env = dict(os.environ, PYTHONPATH=str(registry.Path(registry.__file__).resolve().parents[2]))
    run = subprocess.run([sys.executable, "-m", "mobilenetv2", "classify", str(image), "--weights", "0.5_96"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == "", run.stderr
    lines = cli_error_lines(run.stderr)  # (less the missing C extension's warning, as .ci/no-ext runs)
    assert len(lines) == 1 and "percent-encode" in lines[0], run.stderr
    assert not [s for s in secrets if s in run.stderr], run.stderr
    assert seen == [] and not cache(isolated).exists()


@pytest.mark.parametrize("base", ["http://mirror.example:8080/w/", "http://user:pa55@mirror.example:8080/w/",
                                  "http://user:pa55@[fe80::1]:8080/w/", "http://user:pa55@[fe80::1]/w/",
                                  "http://mirror.example:/w/", "file:///srv/mirror/@x:y/",
                                  "http://unpkg.example/mobilenet@1.0/", "http://mirror.example/@scope/w/",
                                  "http://user:pa55@mirror.example:8080/pkg@1.0/"])
def test_a_numeric_or_no_port_is_taken(monkeypatch, base):
    """The refusal above is for a port that is not a number, or a password cut at a '/' only: an '@'
    in a path (a package@version) is taken."""
    monkeypatch.setenv(registry.ENV_URL, base)
    assert registry.weights_url(1.0, 224).endswith(keras_name(1.0, 224, True))


def test_a_part_file_cleaned_before_its_lock_is_taken_is_replaced(isolated, server, monkeypatch):
    """Two downloads at once: the second's clean-up could open and lock the first's part file
    between its creation and its lock, and remove it; the first then wrote into a removed file
    and failed ('did not send a complete HDF5 file ... try again', or at the rename).  A part
    file whose lock cannot be taken is given up for a new one."""
    import tempfile
    server.serve(keras_name(*UNKNOWN), PAYLOAD)
    real, cleaned = tempfile.mkstemp, []

    def mkstemp_then_another_process_cleans(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        if not cleaned:  # the other process's _clean_stale_parts, run in that gap (flock is per open)
            other = os.open(path, os.O_RDWR)
            import fcntl
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            cleaned.append(other)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_another_process_cleans)
    try:
        path = registry.resolve(*UNKNOWN)
    finally:
        for fd in cleaned:
            os.close(fd)
    assert path.read_bytes() == PAYLOAD
    only_good_files(cache(isolated), [keras_name(*UNKNOWN)])
