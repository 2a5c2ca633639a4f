"""Model registry: lookup order and download over real HTTP from a local server."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import models
from engine.models import MODELS, fetch_model, resolve_model_path

SPEC = MODELS["face_landmarker"]


@pytest.fixture
def model_server(shared_dir: Path) -> Iterator[str]:
    """Base URL of an http.server on 127.0.0.1 serving ``shared/models`` read-only."""
    folder = shared_dir / "models"
    if not (folder / SPEC.filename).is_file():
        pytest.skip(f"{folder / SPEC.filename} absent")
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def no_model_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No EXPLLM_MODEL_DIR, and a private empty XDG cache; returns that cache's model dir."""
    monkeypatch.delenv("EXPLLM_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "expllm" / "models"


def test_registry_entry() -> None:
    assert SPEC.filename == "face_landmarker.task"
    assert SPEC.url.startswith("https://storage.googleapis.com/mediapipe-models/")
    assert len(SPEC.sha256) == 64 and SPEC.licence == "Apache-2.0"
    assert [spec.name for spec in models.list_models()] == sorted(MODELS)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="face_landmarker"):
        resolve_model_path("nope")


def test_missing_model_tells_how_to_fetch(no_model_env: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        resolve_model_path("face_landmarker")
    message = str(error.value)
    assert "expllm models fetch face_landmarker" in message
    assert "EXPLLM_MODEL_DIR" in message and str(no_model_env) in message


def test_resolve_order_env_dir_before_user_cache(
    no_model_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_model_env.mkdir(parents=True)
    (no_model_env / SPEC.filename).write_bytes(b"cached")
    assert resolve_model_path("face_landmarker") == no_model_env / SPEC.filename
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv("EXPLLM_MODEL_DIR", str(env_dir))
    assert resolve_model_path("face_landmarker") == no_model_env / SPEC.filename
    (env_dir / SPEC.filename).write_bytes(b"env")
    assert resolve_model_path("face_landmarker") == env_dir / SPEC.filename


def test_default_cache_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "expllm" / "models"


def test_fetch_over_http_checks_and_places_the_file(model_server: str, no_model_env: Path) -> None:
    path = fetch_model("face_landmarker", url=f"{model_server}/{SPEC.filename}")
    assert path == no_model_env / SPEC.filename
    assert path.stat().st_size == SPEC.size
    assert models.sha256_file(path) == SPEC.sha256
    assert [p.name for p in no_model_env.iterdir()] == [SPEC.filename]  # no .part left
    assert resolve_model_path("face_landmarker") == path
    # a second fetch keeps the verified file without downloading (the URL is dead)
    assert fetch_model("face_landmarker", url=f"{model_server}/missing") == path


def test_fetch_into_dest_dir(model_server: str, tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b"
    path = fetch_model("face_landmarker", dest_dir=dest, url=f"{model_server}/{SPEC.filename}")
    assert path == dest / SPEC.filename and path.is_file()


def test_checksum_mismatch_is_an_error_and_leaves_nothing(
    model_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = models.ModelSpec(**{**SPEC.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(MODELS, "face_landmarker", wrong)
    with pytest.raises(ValueError, match="checksum mismatch for face_landmarker.task"):
        fetch_model("face_landmarker", dest_dir=tmp_path, url=f"{model_server}/{SPEC.filename}")
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_nothing(model_server: str, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="download of face_landmarker.task from .* failed: HTTP"):
        fetch_model("face_landmarker", dest_dir=tmp_path, url=f"{model_server}/missing.task")
    assert list(tmp_path.iterdir()) == []
