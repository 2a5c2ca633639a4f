"""Prefect settings for offline runs, and clean-up of servers left by killed runs.

Prefect starts a temporary local API server (SQLite) per process when no server is configured.
It must not phone home (analytics off) and needs a generous start-up timeout on small machines.
A SIGKILLed run leaves that server behind; every run marks its processes with ``EXPLLM_RUN`` in
the environment so the next run on the same output folder can find and stop the orphans.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOG_PRINTS": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
}
RUN_MARK = "EXPLLM_RUN"


def configure_offline() -> None:
    """Apply offline defaults (explicit environment settings win). Call before importing prefect."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def mark_run(out_dir: Path) -> list[int]:
    """Mark this process tree as the run writing ``out_dir``; stop orphans of an earlier run.

    Returns the PIDs of the orphans stopped (processes re-parented to init that carry the same
    mark — a temporary Prefect server or pool workers of a killed run).
    """
    mark = str(Path(out_dir).resolve())
    stopped = []
    for pid in _orphans_with_mark(mark):
        try:
            os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    os.environ[RUN_MARK] = mark
    return stopped


def _orphans_with_mark(mark: str) -> list[int]:
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    needle = f"{RUN_MARK}={mark}".encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != 1:
                continue
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found
