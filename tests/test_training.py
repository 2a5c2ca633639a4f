"""engine.model.training without torch: AU readings of shard rows and the held-out split."""

import numpy as np
import pandas as pd
import pytest

from engine.model.training import FinetuneConfig, au_readings, training_set

COT = (
    "**Key Observations:** AU12 (lip corner puller) at 3.5/5.\n\n"
    "**Overall Emotional Interpretation:** A smile, which reads as happiness.\n\n"
    "**Conclusion:** The expression is **happiness**."
)


def frame(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": [f"r{i:02d}" for i in range(count)],
            "image_path": [f"{i}.png" for i in range(count)],
            "label": ["happiness"] * count,
            "cot_text": [COT] * count,
            "verified": [True] * count,
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


def test_a_smoke_run_keeps_the_class_frequencies_of_every_training_row():
    """``max_samples`` trains on a few rows; the prior correction still needs the frequencies
    of all training rows (a smoke run's first rows once gave a skewed prior)."""
    rows = frame(10).assign(label=["sadness"] * 2 + ["neutral"] * 8)
    config = FinetuneConfig(eval_samples=0, max_samples=2, mix=(0, 1))
    data = training_set(rows, lambda row: np.zeros((48, 48, 3), np.uint8), config)
    assert len(data.samples) == 2
    assert data.class_frequencies[:4] == pytest.approx((0.8, 0.0, 0.0, 0.2))


def test_unverified_rows_train_the_label_only():
    rows = frame(12).assign(verified=[True] * 6 + [False] * 6)
    config = FinetuneConfig(eval_samples=0, mix=(0, 1))
    data = training_set(rows, lambda row: np.zeros((48, 48, 3), np.uint8), config)
    kinds = {s.id: s.kind for s in data.samples}
    assert [kinds[f"r{i:02d}#cot"] for i in range(6)] == ["cot"] * 6
    assert [kinds[f"r{i:02d}#fer"] for i in range(6, 12)] == ["fer"] * 6


def test_a_verified_cot_that_weighs_contrary_evidence_is_learnt():
    """Verified (its verdict is the label) though the measured evidence leads with surprise:
    learnt, so the model sees how a text weighs contrary cues; unverified texts are not."""
    weighed = COT.replace("A smile", "Surprise carries the most evidence, but a smile")
    rows = frame(4).assign(cot_text=[COT, weighed, COT, weighed], verified=[1, 1, 0, 1])
    data = training_set(
        rows,
        lambda row: np.zeros((48, 48, 3), np.uint8),
        FinetuneConfig(eval_samples=0, mix=(0, 1)),
    )
    assert [s.kind for s in data.samples] == ["cot", "cot", "fer", "cot"]
    assert data.au_backend == ""  # no au_backend column: unknown
    assert data.class_frequencies == (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # all happiness
    mixed = rows.assign(au_backend=["fused", "mesh", "fused", "fused"])
    with pytest.raises(ValueError, match="mix AU back ends"):
        training_set(mixed, lambda row: None, FinetuneConfig(eval_samples=0))


def test_generate_cots_batches_and_passes_the_allowed_labels_down():
    from engine.model.config import GENERATION_BATCH
    from engine.model.settings import DecodingSettings
    from engine.model.training import generate_cots

    class Model:
        calls = []

        def generate(self, visuals, max_new_tokens, decoding, allowed_labels):
            self.calls.append((len(visuals), decoding, allowed_labels))
            return ["text"] * len(visuals)

    model, plain = Model(), DecodingSettings()
    texts = generate_cots(
        model, list(range(GENERATION_BATCH + 1)), 9, decoding=plain, allowed_labels=["fear"]
    )
    assert len(texts) == GENERATION_BATCH + 1
    assert model.calls == [(GENERATION_BATCH, plain, ["fear"]), (1, plain, ["fear"])]


def test_detected_training_faces_are_framed_as_the_model_frames_them(tmp_path):
    """A face the pipeline's detector found (box grown by 20 %) is found again and grown by
    the model's margin, as ``expllm evaluate`` frames it; other faces keep the row's box."""
    skimage = pytest.importorskip("skimage.data")
    import cv2

    from engine.data.faces import DETECTOR_NAME, FaceFinder
    from engine.model.base import face_margin_of
    from engine.model.training import BOX_COLUMNS, face_of, model_face_margin

    image = np.pad(skimage.astronaut(), ((256, 256), (256, 256), (0, 0)))
    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    found = FaceFinder(mode="detector").find(image)  # the pipeline's framing
    row = {"image_path": "frame.png", "face_source": DETECTOR_NAME}
    row |= dict(zip(BOX_COLUMNS, found.box, strict=True))
    margin = model_face_margin(FinetuneConfig(base="nano"))
    assert margin == face_margin_of("nano") < FaceFinder().margin
    assert model_face_margin(FinetuneConfig(base="hf:any")) is None
    assert np.array_equal(face_of(row, tmp_path), found.crop)
    framed = face_of(row, tmp_path, margin)
    assert np.array_equal(framed, FaceFinder(mode="detector", margin=margin).find(image).crop)
    assert framed.shape[0] < found.crop.shape[0]
    given = row | {"face_source": "dataset"}  # a dataset's box stays as it was
    assert np.array_equal(face_of(given, tmp_path, margin), found.crop)
    elsewhere = row | dict(zip(BOX_COLUMNS, (0, 0, 64, 64), strict=True))  # no face in it
    assert face_of(elsewhere, tmp_path, margin).shape == (64, 64, 3)
