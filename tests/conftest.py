"""Shared fixtures: the read-only data folder beside the repository, a Prefect test server.

``shared_dir`` is ``$EXPLLM_SHARED`` or ``<repo>/../shared``; tests that need it (or
``ferplus_dir`` inside it) are skipped cleanly where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.runtime import configure_offline

configure_offline()  # Prefect: no analytics, quiet logs, generous server start-up in tests

REPO = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    """Where the shared data folder is expected (it may not exist)."""
    return Path(os.environ.get("EXPLLM_SHARED") or REPO.parent / "shared")


# Model files come from the shared folder first, so that `--au-backend auto` resolves the same
# on every machine: `fused` beside a shared folder with OpenFace's files, else `mesh`.
os.environ["EXPLLM_MODEL_DIR"] = str(shared_path() / "models")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared read-only folder; skips the test when it is absent."""
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} absent (set EXPLLM_SHARED)")
    return path


@pytest.fixture(scope="session")
def ferplus_dir(shared_dir: Path) -> Path:
    """The FER+ root holding FER2013Train|Valid|Test; skips the test when it is absent."""
    path = shared_dir / "data" / "ferplus"
    if not all((path / f"FER2013{s}" / "label.csv").is_file() for s in ("Train", "Valid", "Test")):
        pytest.skip(f"FER+ data absent under {path}")
    return path


@pytest.fixture(scope="session")
def openface_dir(shared_dir: Path) -> Path:
    """OpenFace 2.2's AU model folder in the shared folder; skips the test when it is absent."""
    folder = shared_dir / "models" / "openface"
    if not (folder / "AU_all_static.txt").is_file():
        pytest.skip(f"OpenFace model files absent under {folder}")
    return folder


@pytest.fixture(scope="module")
def rules():
    """The hand-set rule tables of ``data/``."""
    from engine.cot.rules import RuleBook

    return RuleBook.load()


@pytest.fixture(scope="module")
def prefect_harness():
    """A temporary Prefect server and database for the flows of one test module."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
