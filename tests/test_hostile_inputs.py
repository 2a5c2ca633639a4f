"""Hostile inputs (issue 12): one-line errors naming the path, no file skipped without a word,
no path out of the dataset root, temporary files swept on resume, spec errors before Prefect."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from engine.data.datasets import read_dataset
from engine.data.images import load_image
from engine.store.shards import STALE_TMP_SECONDS, ShardStore, _tmp_prefix
from engine.types import StageError
from flows.cli import main

REPO = Path(__file__).resolve().parents[1]


def make_folder(root: Path, count: int = 2) -> Path:
    """A ``folder:`` dataset of a few small PNGs per class."""
    rng = np.random.default_rng(0)
    for label in ("happy", "sad"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            cv2.imwrite(str(root / label / f"img{index}.png"), image)
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("expllm: error: ")
    return lines[0]


# --- 1. OS errors: one line naming the path, exit 2 ----------------------------------------------


def test_out_naming_an_existing_file_is_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    target = tmp_path / "taken.txt"
    target.write_text("x")
    assert main(["exp-cot", f"folder:{data}", "--out", str(target)]) == 2
    assert one_error_line(capsys) == f"expllm: error: {target}: exists and is not a folder"


def test_out_below_a_file_is_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    (tmp_path / "taken.txt").write_text("x")
    assert main(["exp-cot", f"folder:{data}", "--out", str(tmp_path / "taken.txt" / "o")]) == 2
    line = one_error_line(capsys)
    assert "taken.txt" in line and "Not a directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder_is_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["exp-cot", f"folder:{data}", "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    assert one_error_line(capsys).startswith(f"expllm: error: {out}: output folder is not writable")


def test_read_only_file_system_is_one_line(tmp_path, capsys, monkeypatch):
    import flows.cli_exp_cot

    data = make_folder(tmp_path / "data")

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(flows.cli_exp_cot.tempfile, "mkstemp", refuse)
    assert main(["exp-cot", f"folder:{data}", "--out", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys) == (
        f"expllm: error: {tmp_path / 'out'}: output folder is not writable (Read-only file system)"
    )


def test_failed_write_during_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    import flows.cli_exp_cot

    shard = tmp_path / "out" / "shard-00000.parquet"

    def fail(args):
        raise OSError(errno.EFBIG, "File too large", str(shard))

    monkeypatch.setattr(flows.cli_exp_cot, "cmd_exp_cot", fail)
    assert main(["exp-cot", "folder:x", "--out", str(tmp_path / "out")]) == 2
    assert one_error_line(capsys) == f"expllm: error: {shard}: File too large"
    with pytest.raises(OSError):  # --verbose shows the traceback
        main(["--verbose", "exp-cot", "folder:x", "--out", str(tmp_path / "out")])


# --- 2. every input file lands or is rejected ----------------------------------------------------


def test_gif_and_symlink_loop_are_not_skipped(tmp_path):
    root = make_folder(tmp_path / "data", count=1)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((32, 32, 3), 128, np.uint8))
    from PIL import Image

    Image.open(tmp_path / "a.png").save(root / "happy" / "anim.gif")
    loop = root / "sad" / "loop.png"
    loop.symlink_to(loop)
    (root / "sad" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    records = {r.relpath: r for r in read_dataset(f"folder:{root}")}
    assert {"happy/anim.gif", "sad/loop.png", "sad/gone.jpg"} <= set(records)
    assert load_image(records["happy/anim.gif"]).shape == (32, 32, 3)
    with pytest.raises(StageError, match="symbolic link loop"):
        load_image(records["sad/loop.png"])
    with pytest.raises(StageError, match="broken symbolic link"):
        load_image(records["sad/gone.jpg"])


# --- 3. temporary files of a killed writer are swept on resume -----------------------------------


def test_tmp_of_a_sigkilled_writer_is_swept_on_resume(tmp_path):
    out = tmp_path / "out"
    store = ShardStore(out, {"run": 1})
    store.open()
    (out / "_rejected").mkdir()
    code = (
        "import os, signal, sys, tempfile\n"
        "from engine.store.shards import _tmp_prefix\n"
        "for d in sys.argv[1:]:\n"
        "    fd, _ = tempfile.mkstemp(prefix=_tmp_prefix('shard-00000.parquet'), suffix='.tmp',"
        " dir=d)\n"
        "    os.write(fd, b'PAR1 half written')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code, str(out), str(out / "_rejected")], cwd=REPO, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    old = out / ".shard-00001.parquet.abc.tmp"  # no owner in the name: swept once old
    old.write_text("x")
    os.utime(old, (time.time() - STALE_TMP_SECONDS - 5,) * 2)
    fd, live = __import__("tempfile").mkstemp(  # a live writer's file (a concurrent run): kept
        prefix=_tmp_prefix("shard-00002.parquet"), suffix=".tmp", dir=out
    )
    os.close(fd)
    assert len(list(out.rglob(".*.tmp"))) == 4
    resumed = ShardStore(out, {"run": 1})
    resumed.open()
    assert len(resumed.swept) == 3
    assert [p.name for p in out.rglob(".*.tmp")] == [Path(live).name]


# --- 4. no path out of the dataset root ----------------------------------------------------------


def test_ferplus_row_leading_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "ferplus"
    (root / "FER2013Test").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cv2.imwrite(str(outside / "x.png"), np.zeros((48, 48, 3), np.uint8))
    labels = root / "FER2013Test" / "label.csv"
    labels.write_text(
        'fer0.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0\n'
        '../../elsewhere/x.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0\n'
    )
    with pytest.raises(ValueError, match=r"label.csv:2: image path .*elsewhere.* outside"):
        read_dataset(f"ferplus:{root}")


# --- 5. inspect on foreign parquet ---------------------------------------------------------------


def test_inspect_foreign_parquet_names_the_file(tmp_path, capsys):
    (tmp_path / "_manifest.json").write_text(json.dumps({"schema_version": "1.2", "shards": {}}))
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "shard-00000.parquet")
    assert main(["inspect", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert f"{tmp_path / 'shard-00000.parquet'}: not an expllm shard" in line


# --- 6. messages that say what is wrong ----------------------------------------------------------


def test_negative_ferplus_vote_is_named(tmp_path):
    root = tmp_path / "ferplus"
    (root / "FER2013Valid").mkdir(parents=True)
    labels = root / "FER2013Valid" / "label.csv"
    labels.write_text(
        'fer0.png,"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0\nfer1.png,box,10,-1,0,0,0,0,0,0,0,0\n'
    )
    with pytest.raises(ValueError, match=r"FER2013Valid/label.csv:2: negative vote count"):
        read_dataset(f"ferplus:{root}")


def test_broken_manifest_is_named(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "_manifest.json").write_text("{broken")
    assert main(["inspect", str(out)]) == 2
    assert f"{out / '_manifest.json'}: not valid JSON" in one_error_line(capsys)
    assert main(["exp-cot", f"folder:{data}", "--out", str(out)]) == 2
    assert f"{out / '_manifest.json'} is not valid JSON" in one_error_line(capsys)


def test_class_folder_without_images_says_so(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "notes.txt").write_text("no image")
    with pytest.raises(ValueError, match=f"no images were found under {root}"):
        read_dataset(f"folder:{root}")
    assert main(["exp-cot", f"folder:{root}", "--split", "unsplit", "--out", "o"]) == 2
    assert "no images were found under" in one_error_line(capsys)


# --- 7. spec and argument errors before Prefect starts -------------------------------------------


@pytest.mark.parametrize(
    "spec, split, message",
    [
        ("imagenet:{data}", None, "unknown dataset kind 'imagenet'"),
        ("folder:{data}/missing", None, "does not exist"),
        ("folder:{data}", "test", "split 'test' not found"),
        ("folder:{data}", "nonsense", "unknown split 'nonsense'"),
        ("nocolon", None, "is not KIND:PATH"),
    ],
)
def test_spec_errors_come_fast_as_one_line(tmp_path, capsys, spec, split, message):
    data = make_folder(tmp_path / "data")
    args = ["exp-cot", spec.format(data=data), "--out", str(tmp_path / "out")]
    started = time.perf_counter()
    assert main(args + (["--split", split] if split else [])) == 2
    assert time.perf_counter() - started < 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_spec_error_does_not_start_prefect(tmp_path):
    code = (
        "import sys\nfrom flows.cli import main\n"
        f"rc = main(['exp-cot', 'imagenet:{tmp_path}', '--out', '{tmp_path / 'o'}'])\n"
        "print('prefect' in sys.modules)\nsys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout.strip() == "False"
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_native_log_lines_are_silenced_unless_verbose() -> None:
    """MediaPipe's absl/TF Lite lines go to /dev/null; Python's stderr still reaches the user."""
    code = (
        "import os, sys\n"
        "from flows.cli import quiet_native_logs\n"
        "if sys.argv[1] == 'quiet':\n"
        "    quiet_native_logs()\n"
        "import numpy as np\n"
        "from engine.aus.mesh import open_face_mesh, run_face_mesh\n"
        "run_face_mesh(open_face_mesh(), np.zeros((64, 64, 3), np.uint8))\n"
        "os.write(2, b'native line\\n')\n"
        "print('python line', file=sys.stderr)\n"
    )
    for mode in ("quiet", "verbose"):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "python line" in done.stderr
        noisy = "native line" in done.stderr and "W0000" in done.stderr
        assert noisy == (mode == "verbose"), done.stderr
