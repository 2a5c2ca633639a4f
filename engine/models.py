"""Registry of downloadable model files, their lookup on disk and their download.

Models are looked up in ``$EXPLLM_MODEL_DIR`` first, then in the user cache
(``$XDG_CACHE_HOME/expllm/models``, default ``~/.cache/expllm/models``).
``fetch_model`` downloads into the user cache (or a given folder) and checks sha256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 16


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model file."""

    name: str
    filename: str
    url: str
    sha256: str
    size: int
    licence: str
    description: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="face_landmarker",
            filename="face_landmarker.task",
            url=(
                "https://storage.googleapis.com/mediapipe-models/face_landmarker/"
                "face_landmarker/float16/1/face_landmarker.task"
            ),
            sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            size=3_758_596,
            licence="Apache-2.0",
            description="MediaPipe Face Landmarker: 478 landmarks and 52 blendshapes",
        ),
    )
}


def list_models() -> list[ModelSpec]:
    """Known models, sorted by name."""
    return [MODELS[name] for name in sorted(MODELS)]


def model_spec(name: str) -> ModelSpec:
    """The registry entry ``name``; raises KeyError listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None


def cache_dir() -> Path:
    """The user cache folder for models (it may not exist yet)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "expllm" / "models"


def search_dirs() -> list[Path]:
    """Folders searched by ``resolve_model_path``, in order."""
    dirs = []
    if os.environ.get("EXPLLM_MODEL_DIR"):
        dirs.append(Path(os.environ["EXPLLM_MODEL_DIR"]))
    dirs.append(cache_dir())
    return dirs


def resolve_model_path(name: str) -> Path:
    """Path of model ``name``'s file on disk; raises FileNotFoundError telling how to get it."""
    spec = model_spec(name)
    dirs = search_dirs()
    for folder in dirs:
        candidate = folder / spec.filename
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in dirs)
    raise FileNotFoundError(
        f"model file {spec.filename} ({name}) not found in {searched}; "
        f"run `expllm models fetch {name}` or set EXPLLM_MODEL_DIR to a folder holding it"
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(source: str, fd: int, filename: str) -> str:
    """Stream ``source`` into the open file ``fd``; returns the hex sha256 of what was read."""
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source, timeout=60) as reply:
            for block in iter(lambda: reply.read(_CHUNK), b""):
                digest.update(block)
                out.write(block)
    except OSError as error:  # URLError, HTTPError, timeouts, disk errors
        raise OSError(f"download of {filename} from {source} failed: {error}") from error
    return digest.hexdigest()


def fetch_model(name: str, dest_dir: Path | None = None, url: str | None = None) -> Path:
    """Download model ``name`` into ``dest_dir`` (default the user cache) and return its path.

    The file is streamed to a temporary file beside the target, its sha256 checked against
    the registry, then renamed into place. A checksum mismatch deletes the download and raises
    ValueError; a failed download raises OSError; both name the file. ``url`` overrides the
    registry's address (mirrors, tests). A file already present with the right checksum is kept
    without downloading.
    """
    spec = model_spec(name)
    folder = Path(dest_dir) if dest_dir is not None else cache_dir()
    target = folder / spec.filename
    if target.is_file() and sha256_file(target) == spec.sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    source = url or spec.url
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        digest = _download(source, fd, spec.filename)
        if digest != spec.sha256:
            raise ValueError(
                f"checksum mismatch for {spec.filename} downloaded from {source}: "
                f"sha256 {digest}, expected {spec.sha256}; the file was discarded"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
