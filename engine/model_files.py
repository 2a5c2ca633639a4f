"""Registry of downloadable model files (``data/models.json``), their lookup and download.

A model is one file (``face_landmarker.task``) or a folder of files (``openface/``), each file
with its sha256. Models are looked up in ``$EXPLLM_MODEL_DIR`` first, then in the user cache
(``$XDG_CACHE_HOME/expllm/models``, default ``~/.cache/expllm/models``). ``fetch_model``
downloads into the user cache (or a given folder), checks every sha256 and only then moves the
files into place. Models whose licence restricts use are fetched only with ``accept_licence``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from engine.resources import data_file, sha256_file

_CHUNK = 1 << 16


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model: a single file, or a ``folder`` of files under a base ``url``."""

    name: str
    description: str
    licence: str
    url: str  # the file's address, or the base address of a folder's files
    files: dict[str, str]  # relative path -> sha256
    folder: str | None = None
    licence_url: str | None = None
    accept_licence: bool = False  # fetching needs the user's explicit acceptance

    @property
    def target(self) -> str:
        """The file or folder name the model has on disk."""
        return self.folder or next(iter(self.files))

    def file_url(self, relpath: str, base: str | None = None) -> str:
        """Where ``relpath`` is downloaded from (``base`` overrides the registry's address)."""
        if self.folder is None:
            return base or self.url
        return (base or self.url).rstrip("/") + "/" + relpath


def _read_checksums(name: str) -> dict[str, str]:
    entries = {}
    for line in data_file(name).read_text().splitlines():
        if line.strip():
            digest, relpath = line.split(maxsplit=1)
            entries[relpath.strip()] = digest
    return entries


@cache
def _registry() -> dict[str, ModelSpec]:
    raw = json.loads(data_file("models.json").read_text())
    specs = {}
    for name, entry in raw.items():
        files = entry.pop("files", None) or _read_checksums(entry.pop("checksums"))
        specs[name] = ModelSpec(name=name, files=files, **entry)
    return specs


MODELS: dict[str, ModelSpec] = _registry()


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


def _complete(spec: ModelSpec, path: Path) -> bool:
    if spec.folder is None:
        return path.is_file()
    return all((path / relpath).is_file() for relpath in spec.files)


def fetch_command(spec: ModelSpec) -> str:
    """The command that downloads ``spec``."""
    accept = " --accept-licence" if spec.accept_licence else ""
    return f"expllm models fetch {spec.name}{accept}"


def find_model(name: str) -> Path | None:
    """Path of model ``name``'s file or complete folder in ``search_dirs()``, else None."""
    spec = model_spec(name)
    for folder in search_dirs():
        if _complete(spec, folder / spec.target):
            return folder / spec.target
    return None


def resolve_model_path(name: str) -> Path:
    """Path of model ``name`` on disk; raises FileNotFoundError telling how to get it."""
    path = find_model(name)
    if path is not None:
        return path
    spec = model_spec(name)
    searched = ", ".join(str(d / spec.target) for d in search_dirs())
    raise FileNotFoundError(
        f"model {spec.target} ({name}) not found or incomplete in {searched}; "
        f"run `{fetch_command(spec)}` or set EXPLLM_MODEL_DIR to a folder holding it"
    )


def _download(source: str, target: Path, relpath: str, expected: str) -> None:
    """Stream ``source`` into ``target`` and check its sha256 against ``expected``."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target.open("wb") as out, urllib.request.urlopen(source, timeout=60) as reply:
            for block in iter(lambda: reply.read(_CHUNK), b""):
                digest.update(block)
                out.write(block)
    except OSError as error:  # URLError, HTTPError, timeouts, disk errors
        raise OSError(f"download of {relpath} from {source} failed: {error}") from error
    if digest.hexdigest() != expected:
        raise ValueError(
            f"checksum mismatch for {relpath} downloaded from {source}: "
            f"sha256 {digest.hexdigest()}, expected {expected}; the download was discarded"
        )


def _verified(spec: ModelSpec, path: Path) -> bool:
    if not _complete(spec, path):
        return False
    if spec.folder is None:
        return sha256_file(path) == spec.files[spec.target]
    return all(sha256_file(path / rel) == digest for rel, digest in spec.files.items())


def fetch_model(
    name: str, dest_dir: Path | None = None, url: str | None = None, accept_licence: bool = False
) -> Path:
    """Download model ``name`` into ``dest_dir`` (default the user cache) and return its path.

    Files are streamed into a temporary folder beside the target, each sha256 checked against
    the registry, and moved into place only when all are right. A checksum mismatch raises
    ValueError and a failed download OSError, both naming the file; nothing is left behind.
    ``url`` overrides the registry's address (a mirror, ``file://`` URLs, tests). A model
    already present with the right checksums is kept without downloading. Models with a
    restrictive licence need ``accept_licence=True``.
    """
    spec = model_spec(name)
    if spec.accept_licence and not accept_licence:
        raise PermissionError(
            f"{name}: {spec.licence} ({spec.licence_url}). Download only if you accept it: "
            f"`{fetch_command(spec)}`"
        )
    folder = Path(dest_dir) if dest_dir is not None else cache_dir()
    target = folder / spec.target
    if _verified(spec, target):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.target}.", suffix=".part", dir=folder))
    try:
        for relpath, digest in spec.files.items():
            _download(spec.file_url(relpath, url), staging / relpath, relpath, digest)
        source = staging / spec.target if spec.folder is None else staging
        if target.is_dir():
            shutil.rmtree(target)  # an incomplete or corrupt earlier copy
        os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
