"""Downloads against a local HTTP server on 127.0.0.1 serving the shared TinyStories files:
full, resumed after a dropped connection, 404, truncated, no network; then the named
sources end to end through HF_ENDPOINT / NANOTUI_SOURCE_URL."""

from __future__ import annotations

import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from engine.data import download as dl
from engine.data.datasets import load_meta, prepare
from engine.data.download import download, fetch_source, source_urls
from engine.data.tokenizers import DataError


class Server:
    """Serves files from a dict {url path: Path}. `mode` shapes the next responses:
    "ok" (Range honoured), "drop-once" (first response closes mid-body), "truncate"
    (always a short body, Range ignored)."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        self.mode = "ok"
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body = server.files[self.path].read_bytes()
                total = len(body)
                start = 0
                if rng and server.mode != "truncate":
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(total - start))
                self.end_headers()
                chunk = body[start:]
                if server.mode == "drop-once" or server.mode == "truncate":
                    if server.mode == "drop-once":
                        server.mode = "ok"
                    self.wfile.write(chunk[: len(chunk) // 3])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(shared_data):
    ts = shared_data / "tinystories"
    hf = "/" + dl.TINYSTORIES_PATH
    s = Server({"/val.txt": ts / "val.txt",
                hf + "TinyStoriesV2-GPT4-train.txt": ts / "test.txt",
                hf + "TinyStoriesV2-GPT4-valid.txt": ts / "val.txt",
                "/mirror/input.txt": shared_data / "shakespeare" / "input.txt"})
    yield s
    s.close()


def test_full_download(server, shared_data, tmp_path):
    seen = []
    out = download(f"{server.url}/val.txt", tmp_path / "val.txt", lambda d, t: seen.append((d, t)))
    assert out.read_bytes() == (shared_data / "tinystories" / "val.txt").read_bytes()
    assert seen[-1] == (2_561_762, 2_561_762)
    assert not (tmp_path / "val.txt.part").exists()
    server.requests.clear()
    download(f"{server.url}/val.txt", tmp_path / "val.txt")  # once: no second request
    assert server.requests == []


def test_dropped_connection_is_resumed_with_a_range_request(server, shared_data, tmp_path):
    server.mode = "drop-once"
    out = download(f"{server.url}/val.txt", tmp_path / "val.txt")
    assert out.read_bytes() == (shared_data / "tinystories" / "val.txt").read_bytes()
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={2_561_762 // 3}-"


def test_resume_across_calls(server, shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    server.mode = "drop-once"
    dest = tmp_path / "val.txt"
    with pytest.raises(DataError, match=r"incomplete .*run the command again to resume"):
        download(f"{server.url}/val.txt", dest)
    assert not dest.exists() and (tmp_path / "val.txt.part").stat().st_size == 2_561_762 // 3
    download(f"{server.url}/val.txt", dest)
    assert dest.read_bytes() == (shared_data / "tinystories" / "val.txt").read_bytes()
    assert server.requests[-1][1] == f"bytes={2_561_762 // 3}-"


def test_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(DataError, match=r"HTTP 404"):
        download(f"{server.url}/nope.txt", tmp_path / "nope.txt")
    assert list(tmp_path.glob("nope.txt*")) in ([], [tmp_path / "nope.txt.lock"])


def test_truncated_response_is_never_taken_as_complete(server, tmp_path):
    server.mode = "truncate"
    dest = tmp_path / "val.txt"
    with pytest.raises(DataError, match=r"incomplete \(.*of 2,561,762 bytes"):
        download(f"{server.url}/val.txt", dest)
    assert not dest.exists()


def test_no_network_says_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "input.txt"
    with pytest.raises(DataError) as e:
        download(f"http://127.0.0.1:{port}/input.txt", dest, timeout=5)
    msg = str(e.value)
    assert "\n" not in msg and f"put it at {dest}" in msg and not dest.exists()


def test_named_sources_honour_hf_endpoint_and_source_url(monkeypatch):
    monkeypatch.delenv("NANOTUI_SOURCE_URL", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert source_urls("tinystories")["val"] == ("https://huggingface.co/datasets/roneneldan/"
                                                 "TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt")
    assert source_urls("shakespeare")["text"] == dl.SHAKESPEARE_URL
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert source_urls("tinystories")["train"].startswith("https://hf-mirror.example/datasets/")
    monkeypatch.setenv("NANOTUI_SOURCE_URL", "http://host/base/")
    assert source_urls("shakespeare")["text"] == "http://host/base/input.txt"


def test_tinystories_end_to_end_uses_its_own_validation_file(server, shared_data, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    files = fetch_source("tinystories")
    assert files["val"].read_bytes() == (shared_data / "tinystories" / "val.txt").read_bytes()
    d = prepare("tinystories", "char", 0.1)
    meta = load_meta(d)
    assert meta["source"] == "tinystories" and meta["split"] == "source"
    assert meta["val_fraction"] is None
    # no split by fraction: every train character comes from the train file
    val_text = (shared_data / "tinystories" / "val.txt").read_text(encoding="utf-8")
    train_text = (shared_data / "tinystories" / "test.txt").read_text(encoding="utf-8")
    n_eot = val_text.count("<|endoftext|>")
    assert meta["val_tokens"] == len(val_text) - 12 * n_eot
    assert meta["train_tokens"] == len(train_text) - 12 * train_text.count("<|endoftext|>")
    val = np.fromfile(d / "val.bin", np.uint16)
    assert int((val == meta["eot_token"]).sum()) == n_eot == 3117


def test_shakespeare_through_a_mirror(server, monkeypatch):
    monkeypatch.setenv("NANOTUI_SOURCE_URL", server.url + "/mirror")
    meta = load_meta(prepare("shakespeare", "char", 0.1))
    assert (meta["vocab_size"], meta["train_tokens"], meta["val_tokens"]) == (65, 1_003_854, 111_540)


def test_offline_named_source_is_one_message_naming_every_file(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as e:
        prepare("tinystories", "char")
    msg = str(e.value)
    assert msg.startswith("cannot download tinystories (") and "\n" not in msg
    assert "TinyStoriesV2-GPT4-train.txt and " in msg and "TinyStoriesV2-GPT4-valid.txt" in msg
    assert str(dl.download_dir("tinystories")) in msg


def test_the_offline_message_keeps_its_remedy_on_the_command_line(monkeypatch, capsys, tmp_path):
    """The remedy (where to put the files) ends the message; it is never cut, however long
    the cache path is."""
    from tui.cli import main
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / "cache"
    monkeypatch.setenv("NANOTUI_DATA_DIR", str(deep))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert main(["prepare", "tinystories"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "…" not in err
    where = err.index(f"in {dl.download_dir('tinystories')}/")
    assert err.index("TinyStoriesV2-GPT4-valid.txt") < where < err.index(
        f"(from http://127.0.0.1:{port}/datasets/roneneldan/TinyStories/resolve/main/ on a "
        f"machine with network)")

