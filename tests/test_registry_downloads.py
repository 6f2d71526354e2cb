"""weights/README.md and README's "Weights" section walked as a user and as an attacker would:
each test here is a claim of theirs that did not hold.  Servers are local (127.0.0.1); nothing
here touches the internet."""
import fcntl
import os
import socketserver
import tempfile
import threading
import time

import pytest

from mobilenetv2.formats import registry
from mobilenetv2.formats.registry import DownloadError
from test_registry import (KNOWN, PAYLOAD, UNKNOWN, Server, cache, isolated, keras_name,  # noqa: F401
                           only_good_files, server)

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent


class TrickleServer:
    """A TCP server on 127.0.0.1 that reads what the client sends first (where ``read``), then
    writes ``head`` and one ``byte`` every 20 ms for at most ``seconds``: long enough to outlast
    a small deadline, short enough that a test of code that ignores it still ends."""

    def __init__(self, head=b"", byte=b"a", seconds=6.0, read=True):
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                outer.connections += 1
                try:
                    if read:
                        self.request.recv(65536)
                    self.request.sendall(head)
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        self.request.sendall(byte)
                        time.sleep(0.02)
                except OSError:
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# -- ports ---------------------------------------------------------------------------------------
def test_a_mirror_port_above_65535_is_refused_before_any_request(isolated, server, monkeypatch):
    """The port is given to getaddrinfo as it is, which takes it modulo 65536: a mirror URL with
    port p + 65536 was downloaded from port p, a different service than the one named (and the
    URL shown in every message was not the one used).  Refused now, before any request, in a
    message that shows nothing of the URL (it may hold the password)."""
    seen = []
    server.serve_with(keras_name(*UNKNOWN), lambda h: seen.append(h.path))
    port = server.httpd.server_address[1]
    for base in (f"http://127.0.0.1:{port + 65536}/w/", f"http://user:pa55@127.0.0.1:{port + 65536}/w/"):
        monkeypatch.setenv(registry.ENV_URL, base)
        for call in (lambda: registry.resolve(*UNKNOWN), lambda: registry.weights_url(*UNKNOWN),
                     registry.variants):
            with pytest.raises(DownloadError, match=r"port .*65535") as info:
                call()
            assert str(port + 65536) not in str(info.value) and "pa55" not in str(info.value)
    assert seen == []
    only_good_files(cache(isolated))


def test_a_redirect_to_a_port_above_65535_is_refused(isolated, server):
    """Followed, the redirect went to port p (modulo 65536) of the host it names."""
    seen = []
    server.serve_with("other.h5", lambda h: seen.append(h.path))
    port = server.httpd.server_address[1]
    target = f"http://127.0.0.1:{port + 65536}/w/other.h5"
    server.serve(keras_name(*UNKNOWN), b"", headers={"Location": target}, status=302)
    with pytest.raises(DownloadError, match=rf"redirects to {target}: .*port"):
        registry.resolve(*UNKNOWN)
    assert seen == []
    only_good_files(cache(isolated))


# -- the deadline --------------------------------------------------------------------------------
def test_an_ftp_mirror_is_refused_rather_than_read_past_the_deadline(isolated, monkeypatch):
    """urllib also reads ftp:// URLs, through sockets the deadline does not watch: an ftp server
    sending its greeting a byte at a time kept a download with a 0.5 s deadline going for as long
    as it liked.  A mirror is http://, https:// or file:// (as README says), and anything else is
    refused before any connection, naming the URL without its credentials."""
    ftp = TrickleServer(byte=b"2", read=False)
    try:
        monkeypatch.setattr(registry, "DEADLINE", 0.5)
        monkeypatch.setenv(registry.ENV_URL, f"ftp://user:pa55@127.0.0.1:{ftp.port}/w/")
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            registry.resolve(*UNKNOWN)
        assert time.monotonic() - start < 3
    finally:
        ftp.close()
    said = str(info.value)
    assert f"ftp://127.0.0.1:{ftp.port}/w/{keras_name(*UNKNOWN)}" in said and "pa55" not in said
    assert "http://, https:// or file://" in said
    assert ftp.connections == 0
    only_good_files(cache(isolated))


def test_a_proxy_trickling_its_connect_reply_hits_the_deadline(isolated, monkeypatch):
    """An https download through $https_proxy: the proxy's reply to CONNECT is read before the
    connection reported its socket to the deadline's watchdog, so a proxy sending that reply a
    byte at a time (each byte restarting the socket's timeout) outlasted any deadline."""
    proxy = TrickleServer(head=b"HTTP/1.1 200 Connection established\r\nX-Slow: ")
    try:
        monkeypatch.setattr(registry, "DEADLINE", 0.5)
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("no_proxy", "")
        monkeypatch.setenv(registry.ENV_URL, "https://mirror.example/w/")  # reached through the proxy only
        start = time.monotonic()
        with pytest.raises(DownloadError, match="did not finish within its deadline"):
            registry.resolve(*UNKNOWN)
        assert time.monotonic() - start < 3
    finally:
        proxy.close()
    only_good_files(cache(isolated))


# -- files already there -------------------------------------------------------------------------
def test_a_file_checked_against_nothing_is_not_taken_as_checked_against_a_size(isolated, tmp_path):
    """verify_file kept its answer per file, whatever it was asked to check: a file found good
    with no size to compare was then 'good' for any size and SHA-256."""
    path = tmp_path / "f.h5"
    path.write_bytes(PAYLOAD)
    assert registry.verify_file(path, None, None) is None
    assert registry.verify_file(path, len(PAYLOAD) + 1, None) == \
        f"it has {len(PAYLOAD)} bytes, the registry says {len(PAYLOAD) + 1}"
    assert "SHA-256" in registry.verify_file(path, len(PAYLOAD), "0" * 64)


def test_a_file_download_file_saved_unchecked_is_still_checked_when_loaded(isolated, server, monkeypatch):
    """download_file(url, dest) with no size marked dest as verified for the process: the file it
    saved under an official name in Keras's cache was then used by resolve() though its size is
    not the registry's."""
    name = keras_name(*KNOWN)
    server.serve(name, PAYLOAD)
    dest = cache(isolated) / name
    assert registry.download_file(server.url + name, dest) == dest  # no size given: not checked
    monkeypatch.setenv(registry.ENV_NO_DOWNLOAD, "1")
    with pytest.raises(DownloadError, match=f"is not the official {name}: it has {len(PAYLOAD)} bytes"):
        registry.resolve(*KNOWN)
    assert dest.read_bytes() == PAYLOAD  # refused, not deleted (downloading is off)


# -- two downloads of one file at once -----------------------------------------------------------
def test_a_part_file_another_download_cleaned_up_before_its_lock_is_given_up(isolated, server, monkeypatch):
    """Two downloads of one file at once: the second's clean-up of stale part files can open the
    first's new part file in the moment between its creation and its lock, take the lock, remove
    the file and close it, all before the first locks it.  The first then locked and filled a file
    no longer in the folder, and failed ('did not send a complete HDF5 file ... No such file';
    try again).  Seen with four threads resolving one file at once.  A part file no longer at its
    path once locked is given up for a new one."""
    server.serve(keras_name(*UNKNOWN), PAYLOAD)
    real, cleaned = tempfile.mkstemp, []

    def mkstemp_then_another_download_cleans_up(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        if not cleaned:  # _clean_stale_parts of another process, whole, in that gap
            other = os.open(path, os.O_RDWR)
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            os.close(other)
            cleaned.append(path)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_another_download_cleans_up)
    path = registry.resolve(*UNKNOWN)
    assert cleaned and path.read_bytes() == PAYLOAD
    only_good_files(cache(isolated), [keras_name(*UNKNOWN)])



# -- what a server says, in messages -------------------------------------------------------------
def test_a_servers_reason_phrase_and_location_cannot_write_escapes_to_the_terminal(isolated, server):
    """The reason phrase of an error status and a refused redirect's Location are the server's
    words, and went into the message as they came: ESC sequences (clear the screen, recolour,
    move the cursor over what was printed) reached the user's terminal."""
    def evil_500(handler):
        handler.send_response(500, "Oops \x1b[2J\x1b[31mRED")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server.serve_with(keras_name(*UNKNOWN), evil_500)
    with pytest.raises(DownloadError, match="HTTP 500 Oops") as info:
        registry.resolve(*UNKNOWN)
    assert "\x1b" not in str(info.value) and r"\x1b[2J" in str(info.value)
    server.serve(keras_name(*UNKNOWN), b"", headers={"Location": "ftp://evil.example/\x1b[2Jw.h5"}, status=302)
    with pytest.raises(DownloadError, match="only http and https") as info:
        registry.resolve(*UNKNOWN)
    assert "\x1b" not in str(info.value)


def test_a_redirect_loop_is_said_in_one_line(isolated, server):
    """urllib's HTTPError for a loop is three lines ('The HTTP server returned a redirect error
    that would lead to an infinite loop.\\nThe last 30x error message was:\\nFound')."""
    server.serve(keras_name(*UNKNOWN), b"", headers={"Location": server.url + keras_name(*UNKNOWN)}, status=302)
    with pytest.raises(DownloadError, match="HTTP 302 redirects in a loop") as info:
        registry.resolve(*UNKNOWN)
    assert "\n" not in str(info.value)
    only_good_files(cache(isolated))
