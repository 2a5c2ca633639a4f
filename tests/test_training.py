"""engine.model.training without torch: AU readings of shard rows and the held-out split."""

import numpy as np
import pandas as pd
import pytest

from engine.model.training import FinetuneConfig, au_readings, training_set

COT = (
    "**Key Observations:** AU12 (lip corner puller) at 3.5/5.\n\n"
    "**Overall Emotional Interpretation:** A smile.\n\n"
    "**Conclusion:** The expression is **happiness**."
)


def frame(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": [f"r{i:02d}" for i in range(count)],
            "image_path": [f"{i}.png" for i in range(count)],
            "label": ["happiness"] * count,
            "cot_text": [COT] * count,
            "AU12": np.linspace(0, 4, count),
            "AU12_L": np.zeros(count),  # a side column: not an AU reading of its own
            "AU06": [np.nan] + [1.0] * (count - 1),
        }
    )


def test_au_readings_take_the_bilateral_columns_and_drop_nan():
    readings = au_readings(frame(3))
    assert readings[0] == {"AU12": 0.0}  # AU06 was NaN
    assert readings[2] == {"AU12": 4.0, "AU06": 1.0}


def test_training_set_holds_out_a_seeded_sample():
    rows = frame(10)
    faces = {r: np.full((48, 48, 3), i, np.uint8) for i, r in enumerate(rows["record_id"])}
    config = FinetuneConfig(eval_samples=3, mix=(1, 1), seed=0)
    data = training_set(rows, lambda row: faces[row["record_id"]], config)
    again = training_set(rows, lambda row: faces[row["record_id"]], config)
    assert len(data.samples) == 7 and len(data.held_faces) == 3 == len(data.held_labels)
    assert [s.id for s in data.samples] == [s.id for s in again.samples]
    held = {int(f[0, 0, 0]) for f in data.held_faces}
    trained = {int(f[0, 0, 0]) for f in data.faces}
    assert not held & trained and len(held | trained) == 10
    for face, sample, reading in zip(data.faces, data.samples, data.aus, strict=True):
        index = int(face[0, 0, 0])  # faces, samples and AU readings stay aligned
        assert sample.id.startswith(f"r{index:02d}#")
        assert reading["AU12"] == pytest.approx(rows["AU12"][index])
    small = training_set(
        rows, lambda row: faces[row["record_id"]], FinetuneConfig(eval_samples=3, max_samples=2)
    )
    assert len(small.samples) == 2
    with pytest.raises(ValueError, match="no training records"):
        training_set(rows, lambda row: None, FinetuneConfig(eval_samples=10))
