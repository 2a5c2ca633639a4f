"""The nano encoder's prior (engine/model/encoder.py) and the files a model folder pins by
sha256."""

import json

import numpy as np
import pytest

from engine.evaluation.classifiers import NanoPredictor
from engine.model.config import CONFIG_FILE, SHIPPED_MODEL, ModelConfig
from engine.model.encoder import (
    NANO_ENCODER,
    PriorClassifiers,
    classify_faces,
    encode_faces,
    encoder_session,
    grey_face,
    pinned,
)


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    ramp = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 64, 0)
    return [np.repeat(ramp, 3, 2)] + [rng.integers(0, 256, (48, 48, 3), np.uint8) for _ in range(7)]


def test_the_prior_is_the_classifiers_face_and_mirror_probabilities(faces):
    encoder = encoder_session(NANO_ENCODER)
    tokens, log_priors = encode_faces(encoder, faces)
    assert tokens.shape == (len(faces), 37, 384) and log_priors.shape == (len(faces), 8)
    expected = NanoPredictor(NANO_ENCODER).classify(faces)  # face + mirror
    np.testing.assert_allclose(np.exp(log_priors), expected + 1e-9, rtol=1e-5)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)
    unflipped = NanoPredictor(NANO_ENCODER, tta=False).classify(faces)
    assert not np.allclose(unflipped, expected, atol=1e-4)  # the mirror has a say


def test_prior_classifiers_average_the_probabilities_of_their_members(faces, tmp_path):
    encoder = encoder_session(NANO_ENCODER)
    _, log_priors = encode_faces(encoder, faces)
    probabilities = classify_faces(encoder, faces)
    np.testing.assert_allclose(np.exp(log_priors), probabilities + 1e-9, rtol=1e-5)
    alone = PriorClassifiers([NANO_ENCODER], NANO_ENCODER)(faces, log_priors)
    np.testing.assert_allclose(np.exp(alone), np.exp(log_priors), atol=1e-6)
    twin = tmp_path / "twin.onnx"  # another file: run, not taken from the encoder's run
    twin.write_bytes(NANO_ENCODER.read_bytes())
    mirrored_faces = [face[:, ::-1] for face in faces]
    other = np.log(classify_faces(encoder, mirrored_faces) + 1e-9)
    mixed = PriorClassifiers([NANO_ENCODER, twin], NANO_ENCODER)(faces, other)
    expected = np.log((np.exp(other) + probabilities) / 2 + 1e-9)
    np.testing.assert_allclose(np.exp(mixed), np.exp(expected), atol=1e-6)


def test_the_shipped_model_pins_its_encoder_and_prior_classifiers():
    config = ModelConfig.read(SHIPPED_MODEL)
    found = SHIPPED_MODEL / CONFIG_FILE
    assert pinned(NANO_ENCODER, config.encoder_sha256, found) == NANO_ENCODER
    for name, sha256 in config.prior_classifiers.items():
        assert pinned(NANO_ENCODER.parent / name, sha256, found).is_file()


def test_a_missing_or_changed_pinned_file_names_the_model_folder(tmp_path):
    config = tmp_path / CONFIG_FILE
    with pytest.raises(FileNotFoundError, match=r"expllm_model.json: .*gone.onnx not found"):
        pinned(tmp_path / "gone.onnx", "0" * 64, config)
    with pytest.raises(ValueError, match=r"expllm_model.json: .*nano_encoder.onnx has another"):
        pinned(NANO_ENCODER, "0" * 64, config)


def test_a_model_folder_names_its_missing_or_changed_prior_classifier(tmp_path):
    from engine.model import load_model

    config = json.loads((SHIPPED_MODEL / CONFIG_FILE).read_text())
    config["prior_classifiers"] = ["gone.onnx"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"expllm_model.json: prior_classifiers must map"):
        load_model(tmp_path)
    config["prior_classifiers"] = {"gone.onnx": "0" * 64}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match=r"expllm_model.json: .*gone.onnx not found"):
        load_model(tmp_path)
    config["prior_classifiers"] = {NANO_ENCODER.name: "0" * 64}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"expllm_model.json: .*nano_encoder.onnx has another"):
        load_model(tmp_path)


def test_prior_classifiers_round_trip_through_the_model_folder(tmp_path):
    from dataclasses import replace

    config = ModelConfig.read(SHIPPED_MODEL)
    listed = replace(config, prior_classifiers={NANO_ENCODER.name: config.encoder_sha256})
    listed.write(tmp_path)
    assert ModelConfig.read(tmp_path) == listed


def test_the_nano_predictor_frames_detected_faces_as_the_encoder_learnt():
    """A full frame's face is grown by FACE_MARGIN, not the pipeline's 0.2: framed that loosely
    the encoder saw faces ~25 % smaller than its training crops (benchmarks/face_framing.py)."""
    skimage = pytest.importorskip("skimage.data")
    from engine.data.faces import FaceFinder
    from engine.evaluation.face_batches import FacePredictor
    from engine.model.base import BASES
    from engine.model.encoder import FACE_MARGIN

    image = np.pad(skimage.astronaut(), ((256, 256), (256, 256), (0, 0)))  # room to grow
    nano = NanoPredictor(NANO_ENCODER, face_mode="detector")
    assert nano.finder.margin == FACE_MARGIN < FaceFinder().margin
    assert BASES.get("nano").face_margin == FACE_MARGIN  # the nano ExpLLM's predictor's
    assert FacePredictor(face_mode="detector").finder.margin == FaceFinder().margin
    tight = nano.finder.find(image).crop.shape[1]
    loose = FaceFinder(mode="detector").find(image).crop.shape[1]
    assert tight / loose == pytest.approx((1 + 2 * FACE_MARGIN) / (1 + 2 * 0.2), abs=0.02)


def test_small_faces_are_enlarged_smoothly_and_large_ones_shrunk_by_area():
    """Area resizing repeats pixels when it enlarges: FER+ Test faces at 24 px read 53 % right
    so, 76 % enlarged bicubically (``benchmarks/face_framing.py --sizes``)."""
    ramp = np.tile(np.arange(0, 240, 10, dtype=np.uint8), (24, 1))  # 24 x 24, +10 per column
    enlarged = grey_face(np.repeat(ramp[..., None], 3, 2))
    assert enlarged.shape == (48, 48)
    assert (np.diff(enlarged[24, 2:-2].astype(int)) > 0).all()  # no pixel repeated
    blocks = np.kron(ramp, np.ones((4, 4), np.uint8))  # 96 x 96, blocks of 4 x 4
    assert np.array_equal(grey_face(blocks), np.kron(ramp, np.ones((2, 2), np.uint8)))
    face = np.repeat(blocks[:48, :48, None], 3, 2)
    assert np.array_equal(grey_face(face), blocks[:48, :48])  # the encoder's size: as it is


def test_crops_of_another_shape_are_letterboxed_not_stretched():
    """A crop clipped by a frame's edge keeps its proportions: its short side is padded by its
    edge pixels, evenly (FER+ Test faces cut to 80 % of their height: 79.9 % right stretched,
    84.2 % letterboxed; ``benchmarks/face_framing.py --cuts``)."""
    rng = np.random.default_rng(0)
    tall = rng.integers(0, 256, (48, 32), dtype=np.uint8)
    boxed = grey_face(tall)
    assert boxed.shape == (48, 48)
    assert np.array_equal(boxed[:, 8:40], tall)  # the crop itself, not resized
    assert (boxed[:, :8] == tall[:, :1]).all() and (boxed[:, 40:] == tall[:, -1:]).all()
    wide = np.repeat(tall.T[..., None], 3, 2)  # 32 x 48, RGB
    assert np.array_equal(grey_face(wide), boxed.T)
    large = np.kron(tall, np.ones((3, 3), np.uint8))  # 144 x 96: padded to 144 x 144, shrunk
    assert np.abs(grey_face(large).astype(int) - boxed).max() <= 1
