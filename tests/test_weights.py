"""Tests for napari_sam.weights against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import xxhash

from napari_sam.weights import (
    MODEL_TYPES,
    REGISTRY,
    ModelInfo,
    WeightsHashError,
    WeightsUnavailableError,
    available_models,
    default_cache_dir,
    fetch_weights,
    get_model_info,
)

PAYLOAD_SIZE = 200 * 1024


@pytest.fixture
def payload() -> bytes:
    """~200 KB of deterministic, non-repeating bytes."""
    chunks, block = [], b"napari-sam"
    for _ in range(PAYLOAD_SIZE // 32):
        block = hashlib.sha256(block).digest()
        chunks.append(block)
    return b"".join(chunks)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _make_handler(
    body: bytes, mode: str, gate: threading.Event | None, requests: list[str]
) -> type:
    """Modes: "full"; "truncate" (Content-Length, dies half-way); "trickle" (one byte
    every 0.1 s); "silent" (headers, then nothing); "nolength" / "nolength-cut" (no
    Content-Length, not chunked: the body ends when the connection closes, complete or
    half-way); "chunked-cut" (chunked transfer cut off half-way)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            half = len(body) // 2
            if mode.startswith("nolength"):
                self.close_connection = True
                self.end_headers()
                self.wfile.write(body[:half] if mode == "nolength-cut" else body)
                return
            if mode == "chunked-cut":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n" % (half, body[:half]))
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_header("Content-Length", str(len(body)))  # the full size
            self.end_headers()
            if mode in ("trickle", "silent"):
                stop.wait(0.1)
                for byte in body[: 200 if mode == "trickle" else 0]:
                    if stop.wait(0.1):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                stop.wait(5)
                return
            self.wfile.write(body[:half])
            self.wfile.flush()
            if mode == "truncate":  # die mid-transfer
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if gate is not None:  # hold the transfer half-way until the test releases it
                gate.wait(timeout=5)
            self.wfile.write(body[half:])

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


ServeFn = Callable[..., str]
stop = threading.Event()  # ends the trickling / silent handlers at teardown
REQUESTS: list[str] = []  # paths requested from the servers of the running test


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """Start ThreadingHTTPServers on 127.0.0.1:0; returns a factory giving the file URL."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []
    stop.clear()
    REQUESTS.clear()

    def start(body: bytes, mode: str = "full", gate: threading.Event | None = None) -> str:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), _make_handler(body, mode, gate, REQUESTS)
        )
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/weights.pth"

    yield start
    stop.set()
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.pth"


def _info(url: str, known_hash: str | None) -> ModelInfo:
    return dataclasses.replace(
        get_model_info("vit_b"), url=url, known_hash=known_hash, filename="test_weights.pth"
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # pooch's short-lived write-permission probe file
        return 0


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_good_hash_downloads_into_cache(tmp_path: Path, payload: bytes, serve: ServeFn) -> None:
    cache = tmp_path / "cache"
    path = fetch_weights(_info(serve(payload), _sha256(payload)), cache_dir=cache, progress=False)
    assert path == cache / "test_weights.pth"
    assert path.read_bytes() == payload
    assert _listing(cache) == ["test_weights.pth"]  # no temp files left behind


def test_unknown_hash_downloads(tmp_path: Path, payload: bytes, serve: ServeFn) -> None:
    path = fetch_weights(_info(serve(payload), None), cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == payload


def test_wrong_hash_raises_and_leaves_nothing(
    tmp_path: Path, payload: bytes, serve: ServeFn
) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(WeightsHashError) as excinfo:
        fetch_weights(_info(serve(payload), wrong), cache_dir=tmp_path, progress=False)
    err = excinfo.value
    assert isinstance(err, WeightsUnavailableError)
    assert err.expected == wrong and err.actual == _sha256(payload)
    assert wrong in str(err) and _sha256(payload) in str(err)
    assert _listing(tmp_path) == []


def test_server_dies_mid_transfer(tmp_path: Path, payload: bytes, serve: ServeFn) -> None:
    url = serve(payload, mode="truncate")
    for known_hash in (_sha256(payload), None):
        with pytest.raises(WeightsUnavailableError):
            fetch_weights(_info(url, known_hash), cache_dir=tmp_path, progress=False)
        assert _listing(tmp_path) == []


def test_download_is_atomic(tmp_path: Path, payload: bytes, serve: ServeFn) -> None:
    """While bytes are in flight only a temp file exists; the target appears complete."""
    gate = threading.Event()
    info = _info(serve(payload, gate=gate), _sha256(payload))
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["path"] = fetch_weights(info, cache_dir=tmp_path, progress=False)
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 5
        partial: list[Path] = []
        while not partial and time.monotonic() < deadline:
            time.sleep(0.01)
            partial = [p for p in tmp_path.iterdir() if _size(p) > 0]
        assert partial, "download never started"
        assert not (tmp_path / info.filename).exists()
        assert all(p.name != info.filename for p in partial)
    finally:
        gate.set()
        worker.join(timeout=5)
    assert "error" not in result, result
    assert result["path"] == tmp_path / info.filename
    assert (tmp_path / info.filename).read_bytes() == payload
    assert _listing(tmp_path) == [info.filename]


def test_cache_hit_needs_no_network(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "test_weights.pth").write_bytes(payload)
    for known_hash in (_sha256(payload), None):
        info = _info(_closed_port_url(), known_hash)
        assert fetch_weights(info, cache_dir=tmp_path, progress=False) == (
            tmp_path / "test_weights.pth"
        )


@pytest.mark.parametrize("placed", ["truncated", "other file"])
def test_hand_placed_file_with_another_hash_is_kept_and_refused(
    tmp_path: Path, payload: bytes, serve: ServeFn, placed: str
) -> None:
    """Offline users place checkpoints by hand: such a file is never deleted and never
    downloaded over; a hash mismatch is refused with both hashes and the path."""
    mine = payload[:1000] if placed == "truncated" else b"my own fine-tuned weights" * 100
    target = tmp_path / "test_weights.pth"
    target.write_bytes(mine)
    info = _info(serve(payload), _sha256(payload))
    with pytest.raises(WeightsHashError) as excinfo:
        fetch_weights(info, cache_dir=tmp_path, progress=False)
    err = excinfo.value
    assert err.expected == _sha256(payload) and err.actual == _sha256(mine)
    assert err.target == target
    for text in (str(target), _sha256(payload), _sha256(mine), "left untouched",
                 "NAPARI_SAM_ALLOW_HASH_MISMATCH=1", "delete it"):
        assert text in str(err)
    assert target.read_bytes() == mine and _listing(tmp_path) == ["test_weights.pth"]
    assert REQUESTS == []  # nothing was downloaded over it


def test_hash_mismatch_can_be_allowed_explicitly(
    tmp_path: Path, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "test_weights.pth"
    target.write_bytes(b"my weights")
    info = _info(_closed_port_url(), _sha256(payload))
    with pytest.warns(UserWarning, match="hash mismatch explicitly allowed"):
        assert fetch_weights(info, cache_dir=tmp_path, allow_hash_mismatch=True) == target
    monkeypatch.setenv("NAPARI_SAM_ALLOW_HASH_MISMATCH", "1")
    with pytest.warns(UserWarning, match=_sha256(b"my weights")):
        assert fetch_weights(info, cache_dir=tmp_path) == target
    assert target.read_bytes() == b"my weights"


def test_offline_error_message_is_actionable(tmp_path: Path, payload: bytes) -> None:
    url = _closed_port_url()
    info = _info(url, _sha256(payload))
    with pytest.raises(WeightsUnavailableError) as excinfo:
        fetch_weights(info, cache_dir=tmp_path, progress=False)
    err = excinfo.value
    assert not isinstance(err, WeightsHashError)
    message = str(err)
    assert url in message
    assert "test_weights.pth" in message
    assert str(tmp_path / "test_weights.pth") in message
    assert "NAPARI_SAM_CACHE_DIR" in message
    assert err.url == url and err.target == tmp_path / "test_weights.pth"
    assert _listing(tmp_path) == []


def test_env_var_sets_cache_dir(
    tmp_path: Path, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "test_weights.pth").write_bytes(payload)
    info = _info(_closed_port_url(), _sha256(payload))
    assert fetch_weights(info, progress=False) == tmp_path / "env" / "test_weights.pth"


def test_explicit_cache_dir_beats_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAPARI_SAM_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert default_cache_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_default_cache_dir_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAPARI_SAM_CACHE_DIR", raising=False)
    assert default_cache_dir().name == "napari-sam"


def test_unknown_model_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as excinfo:
        get_model_info("vit_nonexistent")
    for name in ("vit_b", "vit_l", "vit_h", "vit_t", "vit_b_lm"):
        assert name in str(excinfo.value)
    with pytest.raises(ValueError):
        fetch_weights("vit_nonexistent")


def test_registry_entries_are_well_formed() -> None:
    expected = {
        "vit_b", "vit_l", "vit_h", "vit_t", "vit_t_lm", "vit_b_lm", "vit_l_lm",
        "vit_t_em_organelles", "vit_b_em_organelles", "vit_l_em_organelles",
    }
    assert expected <= set(REGISTRY)
    assert available_models() == list(REGISTRY)
    filenames = [info.filename for info in REGISTRY.values()]
    assert len(set(filenames)) == len(filenames)
    for name, info in REGISTRY.items():
        assert info.name == name
        if info.package_file is not None:  # shipped inside the package (the demo model)
            assert info.model_type == "custom" and info.url == ""
            continue
        assert info.url.startswith("https://")
        assert info.model_type in MODEL_TYPES
        assert name.startswith(info.model_type)
        assert info.filename and "/" not in info.filename
        assert info.known_hash is None or re.fullmatch(
            r"(sha256:[0-9a-f]{64}|xxh128:[0-9a-f]{32})", info.known_hash
        )
        assert info.size_bytes is None or info.size_bytes > 0
    assert REGISTRY["vit_b"].filename == "sam_vit_b_01ec64.pth"
    assert REGISTRY["vit_t"].filename == "mobile_sam.pt"
    with pytest.raises(TypeError):
        REGISTRY["x"] = REGISTRY["vit_b"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY["vit_b"].url = "x"  # type: ignore[misc]


def test_xxh128_hash_is_verified(tmp_path: Path, payload: bytes, serve: ServeFn) -> None:
    known = "xxh128:" + xxhash.xxh128(payload).hexdigest()
    path = fetch_weights(_info(serve(payload), known), cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == payload
    wrong = "xxh128:" + "0" * 32
    with pytest.raises(WeightsHashError):
        fetch_weights(_info(serve(payload), wrong), cache_dir=tmp_path / "b", progress=False)


@pytest.mark.parametrize("known", ["md4x:" + "0" * 32, "xxh999:" + "0" * 32])
def test_unverifiable_hash_is_an_error(
    tmp_path: Path, payload: bytes, serve: ServeFn, known: str
) -> None:
    """A hash that cannot be checked never means "download unverified" (fail closed)."""
    (tmp_path / "cached").mkdir()
    (tmp_path / "cached" / "test_weights.pth").write_bytes(payload)
    for cache in (tmp_path / "empty", tmp_path / "cached"):
        with pytest.raises(WeightsHashError, match="unknown algorithm") as excinfo:
            fetch_weights(_info(serve(payload), known), cache_dir=cache, progress=False)
        assert excinfo.value.expected == known
    assert REQUESTS == [] and not (tmp_path / "empty").exists()


@pytest.mark.parametrize("known", ["hash", None])
@pytest.mark.parametrize("mode", ["trickle", "silent"])
def test_stalled_or_trickling_download_times_out(
    tmp_path: Path, payload: bytes, serve: ServeFn, mode: str, known: str | None
) -> None:
    """A server sending one byte per 0.1 s (or nothing) never hangs the download: the
    overall deadline (or the read timeout) ends it, and nothing is left behind."""
    info = _info(serve(payload, mode=mode), _sha256(payload) if known else None)
    with pytest.raises(WeightsUnavailableError) as excinfo:
        fetch_weights(info, cache_dir=tmp_path, progress=False, timeout=1.0)
    assert not isinstance(excinfo.value, WeightsHashError)
    assert re.search(r"longer than 1 s|timed out", str(excinfo.value))
    assert _listing(tmp_path) == []


def test_download_timeout_from_the_environment(
    tmp_path: Path, payload: bytes, serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAPARI_SAM_DOWNLOAD_TIMEOUT", "1")
    with pytest.raises(WeightsUnavailableError, match="longer than 1 s"):
        fetch_weights(_info(serve(payload, mode="trickle"), None), tmp_path, progress=False)
    monkeypatch.setenv("NAPARI_SAM_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="NAPARI_SAM_DOWNLOAD_TIMEOUT"):
        fetch_weights(_info(serve(payload), None), tmp_path, progress=False)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("mode", ["nolength-cut", "chunked-cut"])
def test_connection_closing_early_without_length_leaves_nothing(
    tmp_path: Path, payload: bytes, serve: ServeFn, mode: str
) -> None:
    """No Content-Length, no known hash: a cut transfer is never cached as the file."""
    with pytest.raises(WeightsUnavailableError):
        fetch_weights(_info(serve(payload, mode=mode), None), cache_dir=tmp_path, progress=False)
    assert _listing(tmp_path) == []


def test_unframed_body_needs_a_hash(tmp_path: Path, payload: bytes, serve: ServeFn) -> None:
    """Without Content-Length or chunking, the end of the body is the connection closing:
    only a known hash can tell a complete file from a cut one."""
    url = serve(payload, mode="nolength")
    with pytest.raises(WeightsUnavailableError, match="neither the file's length"):
        fetch_weights(_info(url, None), cache_dir=tmp_path, progress=False)
    assert _listing(tmp_path) == []
    path = fetch_weights(_info(url, _sha256(payload)), cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == payload
