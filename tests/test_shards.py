import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from engine.store.shards import (
    MANIFEST,
    REJECTED_DIR,
    SCHEMA_VERSION,
    SHARD_SCHEMA,
    SchemaMismatchError,
    ShardStore,
)


def row(record_id, **extra):
    base = {name: None for name in SHARD_SCHEMA.names}
    base.update(
        record_id=record_id,
        dataset="folder",
        split="test",
        image_path=f"{record_id}.png",
        label="happiness",
        AU12=3.5,
        AU12_L=3.0,
        AU12_R=4.0,
        active_aus=["AU12"],
        cot_text="t",
        verified=True,
        faithfulness=1.0,
    )
    base.update(extra)
    return base


def rejected(record_id):
    return {
        "record_id": record_id,
        "dataset": "folder",
        "split": "test",
        "image_path": f"{record_id}.png",
        "label": None,
        "stage": "read",
        "reason": "zero-byte file",
    }


def test_write_and_read_back_with_pandas(tmp_path):
    store = ShardStore(tmp_path, {"spec": "folder:x"})
    store.open()
    store.write_shard("shard-00000", [row("a"), row("b")], [rejected("c")], {"seconds": 0.1})
    store.write_shard("shard-00001", [row("d")], [], {"seconds": 0.1})
    store.write_stats({"records": 3})
    frame = pd.read_parquet(tmp_path)
    assert sorted(frame["record_id"]) == ["a", "b", "d"]
    assert frame.loc[frame.record_id == "a", "AU12_R"].item() == pytest.approx(4.0)
    bad = pd.read_parquet(tmp_path / REJECTED_DIR)
    assert bad["reason"].tolist() == ["zero-byte file"]
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["shards"]["shard-00000"]["rows"] == 2
    assert set(store.finished()) == {"shard-00000", "shard-00001"}
    metadata = pq.read_schema(tmp_path / "shard-00000.parquet").metadata
    assert metadata[b"expllm.schema_version"] == SCHEMA_VERSION.encode()
    assert not list(tmp_path.glob(".*.tmp"))


def test_refuses_another_schema_or_config(tmp_path):
    ShardStore(tmp_path, {"spec": "a"}).open()
    with pytest.raises(SchemaMismatchError, match="another configuration"):
        ShardStore(tmp_path, {"spec": "b"}).open()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["schema_version"] = "0.1"
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SchemaMismatchError, match="schema '0.1'"):
        ShardStore(tmp_path, {"spec": "a"}).open()


def test_refuses_foreign_shards_without_manifest(tmp_path):
    (tmp_path / "shard-00000.parquet").write_bytes(b"PAR1")
    with pytest.raises(SchemaMismatchError, match="no _manifest.json"):
        ShardStore(tmp_path, {}).open()


def test_shard_missing_on_disk_is_not_finished(tmp_path):
    store = ShardStore(tmp_path, {})
    store.open()
    store.write_shard("shard-00000", [row("a")], [], {})
    (tmp_path / "shard-00000.parquet").unlink()
    assert store.finished() == {}


def test_schema_has_one_column_per_au_and_side():
    names = set(SHARD_SCHEMA.names)
    for code in ("AU01", "AU12", "AU43"):
        assert {code, f"{code}_L", f"{code}_R"} <= names
    for column in (
        "record_id",
        "image_bytes",
        "soft_contempt",
        "cot_text",
        "verified",
        "faithfulness",
        "template_id",
        "evidence_fear",
        "pose_yaw",
        "au_model_version",
    ):
        assert column in names


def _small_run(out, ferplus_dir):
    """An Exp-CoT output folder of 8 FER+ test faces (mesh AUs, template writer)."""
    from engine.data.datasets import read_dataset
    from engine.pipeline import ExpCoTPipeline, PipelineConfig
    from engine.store.stats import shard_stats

    dataset = read_dataset(f"ferplus:{ferplus_dir}", split="test", limit=8)
    config = PipelineConfig(au_backend="mesh")
    store = ShardStore(out, {"spec": "ferplus", "pipeline": config.to_dict()})
    store.open()
    pipeline = ExpCoTPipeline(config)
    try:
        result = pipeline.run(dataset.records)
    finally:
        pipeline.close()
    store.write_shard("shard-00000", result.rows, result.rejected, {"seconds": 0.0})
    store.write_stats(shard_stats(out))
    return out


def test_two_runs_of_one_input_are_identical_except_provenance(tmp_path, ferplus_dir):
    from benchmarks.shards_identity import PROVENANCE, compare_runs

    first = _small_run(tmp_path / "a", ferplus_dir)
    second = _small_run(tmp_path / "b", ferplus_dir)
    diffs = compare_runs(first, second)
    assert [d.sizes for d in diffs] == [(8, 8), (0, 0)]
    assert all(d.identical for d in diffs), diffs
    # a changed value is found and named
    frame = pd.read_parquet(second / "shard-00000.parquet")
    frame.loc[0, "cot_text"] = "changed"
    frame.to_parquet(second / "shard-00000.parquet")
    accepted = compare_runs(first, second)[0]
    assert list(accepted.columns) == ["cot_text"] and accepted.columns["cot_text"][0] == 1
    assert "seconds" in PROVENANCE and "seconds" not in accepted.columns
