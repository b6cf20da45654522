"""URL imports cannot reach inside the platform: every hop is checked, and the checked address is the one used."""

import ipaddress
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest

from images.exceptions import UnsafeImage
from images.fetch import Allowed, check, open_url


def serve(handler_body):
    """A local HTTP server answering every GET with handler_body(path) -> (status, headers, body)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            status, headers, body = handler_body(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def mirror():
    server = serve(lambda path: (200, {}, b"image bytes"))
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/x.img", "gopher://example.com/", "http:///nohost",
    "http://127.0.0.1/x.img", "http://localhost/x.img", "http://[::1]/x.img", "http://169.254.169.254/latest/",
    "http://10.0.0.1/x.img", "http://172.16.5.4/x.img", "http://192.168.1.1/x.img", "http://2130706433/x.img",
    "http://0x7f000001/x.img", "http://0177.0.0.1/x.img", "http://[::ffff:127.0.0.1]/x.img", "http://0.0.0.0/",
    "http://[fd00::1]/x.img", "http://host:99999/",
    "http://[64:ff9b::a9fe:a9fe]/latest/", "http://[2002:a9fe:a9fe::1]/latest/",  # NAT64 and 6to4 of 169.254.169.254
])
def test_internal_and_non_http_urls_are_refused(url):
    with pytest.raises(UnsafeImage):
        check(url)


def test_a_public_address_passes_and_is_the_one_connected_to():
    public = [(2, 1, 6, "", ("93.184.215.14", 443))]
    with mock.patch("socket.getaddrinfo", return_value=public):
        target = check("https://images.example.org/debian.qcow2?sig=1")
    assert (target.address, target.port, target.path) == ("93.184.215.14", 443, "/debian.qcow2?sig=1")
    # A host that also resolves to an internal address is refused as a whole
    mixed = [*public, (2, 1, 6, "", ("10.0.0.5", 443))]
    with mock.patch("socket.getaddrinfo", return_value=mixed), pytest.raises(UnsafeImage) as refused:
        check("https://images.example.org/debian.qcow2")
    # saying so without telling which internal address the name has
    assert "images.example.org resolves to an internal address" in str(refused.value)
    assert "10.0.0.5" not in str(refused.value)


def test_an_allowlisted_mirror_is_fetched(mirror):
    with pytest.raises(UnsafeImage, match="internal address"):
        open_url(f"http://127.0.0.1:{mirror}/x.img")
    response = open_url(f"http://127.0.0.1:{mirror}/x.img", allow=[Allowed.parse(f"127.0.0.1:{mirror}")])
    assert response.read() == b"image bytes"


def test_an_allowed_host_redirecting_inside_is_refused_at_that_hop(mirror):
    # Given an allowed mirror that redirects to a loopback service that is not allowed
    bouncer = serve(lambda path: (302, {"Location": f"http://127.0.0.1:{mirror}/secret"}, b""))
    port = bouncer.server_address[1]
    try:
        with pytest.raises(UnsafeImage, match="internal address"):
            open_url(f"http://127.0.0.1:{port}/x.img", allow=[Allowed.parse(f"127.0.0.1:{port}")])
        # And with both allowed, the redirect is followed
        response = open_url(f"http://127.0.0.1:{port}/x.img",
                            allow=[Allowed.parse(f"127.0.0.1:{port}"), Allowed.parse(f"127.0.0.1:{mirror}")])
        assert response.read() == b"image bytes"
    finally:
        bouncer.shutdown()


def test_redirect_loops_and_errors_are_refused_clearly():
    looping = serve(lambda path: (302, {"Location": path}, b""))
    missing = serve(lambda path: (404, {}, b"no"))
    allow = [Allowed.parse("127.0.0.0/8")]
    try:
        with pytest.raises(UnsafeImage, match="redirects"):
            open_url(f"http://127.0.0.1:{looping.server_address[1]}/x", allow=allow)
        with pytest.raises(UnsafeImage, match="404"):
            open_url(f"http://127.0.0.1:{missing.server_address[1]}/x", allow=allow)
    finally:
        looping.shutdown()
        missing.shutdown()


def test_allowlist_entries():
    assert Allowed.parse("10.0.0.0/8").admits(ipaddress.ip_address("10.2.3.4"), 80)
    assert not Allowed.parse("10.1.2.3:8080").admits(ipaddress.ip_address("10.1.2.3"), 80)
    entry = Allowed.parse("[fd00::1]:8080")
    assert entry.port == 8080 and str(entry.network) == "fd00::1/128"


def test_a_sender_that_drips_is_cut_off_at_the_deadline(tmp_path):
    from images.transfer import hashing_copy

    class Drip:
        def getheader(self, name):
            return None

        def read(self, size):
            time.sleep(0.05)
            return b"x"

    with pytest.raises(UnsafeImage, match="took longer than"):
        hashing_copy(Drip(), tmp_path / "out", seconds=0.2)
