"""The nano encoder's prior (engine/model/encoder.py) and the files a model folder pins by
sha256."""

import numpy as np
import pytest

from engine.evaluation.classifiers import NanoPredictor
from engine.model.config import CONFIG_FILE, SHIPPED_MODEL, ModelConfig
from engine.model.encoder import NANO_ENCODER, encode_faces, encoder_session, pinned


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


def test_the_shipped_model_pins_its_encoder():
    config = ModelConfig.read(SHIPPED_MODEL)
    found = SHIPPED_MODEL / CONFIG_FILE
    assert pinned(NANO_ENCODER, config.encoder_sha256, found) == NANO_ENCODER


def test_a_missing_or_changed_pinned_file_names_the_model_folder(tmp_path):
    config = tmp_path / CONFIG_FILE
    with pytest.raises(FileNotFoundError, match=r"expllm_model.json: .*gone.onnx not found"):
        pinned(tmp_path / "gone.onnx", "0" * 64, config)
    with pytest.raises(ValueError, match=r"expllm_model.json: .*nano_encoder.onnx has another"):
        pinned(NANO_ENCODER, "0" * 64, config)
