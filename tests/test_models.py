"""Model registry: lookup order and download over real HTTP from a local server."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import model_files as models
from engine.model_files import MODELS, fetch_model, resolve_model_path

SPEC = MODELS["face_landmarker"]
FILENAME = SPEC.target
OPENFACE = MODELS["openface"]


@pytest.fixture
def model_server(shared_dir: Path) -> Iterator[str]:
    """Base URL of an http.server on 127.0.0.1 serving ``shared/models`` read-only."""
    folder = shared_dir / "models"
    if not (folder / FILENAME).is_file() or not (folder / "openface").is_dir():
        pytest.skip(f"{folder} lacks {FILENAME} or openface/")
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
    assert FILENAME == "face_landmarker.task" and SPEC.folder is None
    assert SPEC.url.startswith("https://storage.googleapis.com/mediapipe-models/")
    assert len(SPEC.files[FILENAME]) == 64 and SPEC.licence == "Apache-2.0"
    assert OPENFACE.folder == "openface" and OPENFACE.accept_licence
    assert "noncommercial" in OPENFACE.licence
    assert OPENFACE.url.startswith("https://raw.githubusercontent.com/TadasBaltrusaitis/OpenFace/")
    assert "OpenFace_2.2.0" in OPENFACE.url
    assert "AU_all_static.txt" in OPENFACE.files and len(OPENFACE.files) == 38
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
    (no_model_env / FILENAME).write_bytes(b"cached")
    assert resolve_model_path("face_landmarker") == no_model_env / FILENAME
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv("EXPLLM_MODEL_DIR", str(env_dir))
    assert resolve_model_path("face_landmarker") == no_model_env / FILENAME
    (env_dir / FILENAME).write_bytes(b"env")
    assert resolve_model_path("face_landmarker") == env_dir / FILENAME


def test_default_cache_is_under_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "expllm" / "models"


def test_fetch_over_http_checks_and_places_the_file(model_server: str, no_model_env: Path) -> None:
    path = fetch_model("face_landmarker", url=f"{model_server}/{FILENAME}")
    assert path == no_model_env / FILENAME
    assert models.sha256_file(path) == SPEC.files[FILENAME]
    assert [p.name for p in no_model_env.iterdir()] == [FILENAME]  # no .part left
    assert resolve_model_path("face_landmarker") == path
    # a second fetch keeps the verified file without downloading (the URL is dead)
    assert fetch_model("face_landmarker", url=f"{model_server}/missing") == path


def test_fetch_into_dest_dir(model_server: str, tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b"
    path = fetch_model("face_landmarker", dest_dir=dest, url=f"{model_server}/{FILENAME}")
    assert path == dest / FILENAME and path.is_file()


def test_checksum_mismatch_is_an_error_and_leaves_nothing(
    model_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = dataclasses.replace(SPEC, files={FILENAME: "0" * 64})
    monkeypatch.setitem(MODELS, "face_landmarker", wrong)
    with pytest.raises(ValueError, match="checksum mismatch for face_landmarker.task"):
        fetch_model("face_landmarker", dest_dir=tmp_path, url=f"{model_server}/{FILENAME}")
    assert list(tmp_path.iterdir()) == []


def test_http_error_leaves_nothing(model_server: str, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="download of face_landmarker.task from .* failed: HTTP"):
        fetch_model("face_landmarker", dest_dir=tmp_path, url=f"{model_server}/missing.task")
    assert list(tmp_path.iterdir()) == []


def test_restricted_licence_needs_acceptance(tmp_path: Path) -> None:
    with pytest.raises(PermissionError, match="noncommercial.*--accept-licence"):
        fetch_model("openface", dest_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_folder_over_http_checks_every_file(model_server: str, no_model_env: Path) -> None:
    path = fetch_model("openface", url=f"{model_server}/openface/", accept_licence=True)
    assert path == no_model_env / "openface"
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == sorted(
        OPENFACE.files
    )
    assert [p.name for p in no_model_env.iterdir()] == ["openface"]  # no staging folder left
    assert resolve_model_path("openface") == path
    (path / "tris_68_full.txt").unlink()  # an incomplete folder is not a model
    with pytest.raises(FileNotFoundError, match="expllm models fetch openface --accept-licence"):
        resolve_model_path("openface")


def test_fetch_folder_from_a_local_mirror(shared_dir: Path, tmp_path: Path) -> None:
    mirror = shared_dir / "models" / "openface"
    if not mirror.is_dir():
        pytest.skip(f"{mirror} absent")
    path = fetch_model("openface", dest_dir=tmp_path, url=mirror.as_uri(), accept_licence=True)
    assert models.sha256_file(path / "AU_all_static.txt") == OPENFACE.files["AU_all_static.txt"]


def test_folder_with_a_bad_file_is_refused_whole(
    model_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = dict(OPENFACE.files, **{"tris_68_full.txt": "0" * 64})
    monkeypatch.setitem(MODELS, "openface", dataclasses.replace(OPENFACE, files=files))
    with pytest.raises(ValueError, match="checksum mismatch for tris_68_full.txt"):
        fetch_model(
            "openface", dest_dir=tmp_path, url=f"{model_server}/openface", accept_licence=True
        )
    assert list(tmp_path.iterdir()) == []
