"""scripts/train_nano_encoder.py: starting from the shipped (exported) encoder and the weight
average (``--init``, ``--swa``). Needs torch and onnx (the ``train`` extra and onnx)."""

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engine.model.encoder import NANO_ENCODER, encoder_session

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_nano_encoder.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_nano_encoder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (96, 48, 48), np.uint8)


def test_an_exported_encoder_is_loaded_back_as_the_same_function(script, images):
    model = script.build_model(48)
    script.load_exported(model, NANO_ENCODER, images[:64])
    model.eval()
    batch = images[64:].astype(np.float32)[:, None] / 255
    with torch.no_grad():
        logits, features = (t.numpy() for t in model(torch.from_numpy(batch)))
    expected = encoder_session(NANO_ENCODER).run(["logits", "features"], {"image": batch})
    np.testing.assert_allclose(logits, expected[0], atol=1e-3)
    np.testing.assert_allclose(features, expected[1], atol=1e-3)


def test_an_encoder_of_another_width_is_refused(script, images):
    with pytest.raises(ValueError, match="nano_encoder.onnx: convolution"):
        script.load_exported(script.build_model(32), NANO_ENCODER, images[:8])


def test_with_swa_training_returns_the_average_of_the_epochs_weights(script, images, monkeypatch):
    averaged_model = torch.optim.swa_utils.AveragedModel
    original = averaged_model.update_parameters
    snapshots = []

    def update_parameters(self, model):
        snapshots.append([p.detach().clone() for p in model.parameters()])
        return original(self, model)

    monkeypatch.setattr(averaged_model, "update_parameters", update_parameters)
    soft = np.full((len(images), 8), 1 / 8, np.float32)
    data = {"train": {"x": images, "soft": soft}}
    args = argparse.Namespace(
        init=NANO_ENCODER, swa=True, width=48, seed=0, limit=None, batch=48, epochs=2, lr=0.01,
        eval_every=1, transfer=False, cpu_bf16=False, targets="soft", class_weight=0.0,
    )  # fmt: skip
    model, summary = script.train(data, args)
    assert [entry["epoch"] for entry in summary["history"]] == [1, 2] and len(snapshots) == 2
    for index, parameter in enumerate(model.parameters()):
        expected = (snapshots[0][index] + snapshots[1][index]) / 2
        torch.testing.assert_close(parameter.detach(), expected, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(*snapshots, strict=True))  # it trained


def test_targets_are_the_vote_distributions_or_the_majority_labels(script):
    split = {"y": np.array([1, 0]), "soft": np.array([[0.4, 0.6] + [0] * 6, [1] + [0] * 7])}
    assert script.training_targets(split, "soft") is split["soft"]
    hard = script.training_targets(split, "hard")
    assert hard.dtype == np.float32 and hard.tolist() == [[0, 1] + [0] * 6, [1] + [0] * 7]


def test_class_weights_lift_rare_classes_and_keep_the_mean_loss_scale(script):
    targets = np.eye(8, dtype=np.float32)[[0] * 6 + [1] * 3 + [7]]
    assert script.balancing_weights(targets, 0.0).tolist() == [1.0] * 8
    weights = script.balancing_weights(targets, 0.5)
    assert weights[7] > weights[1] > weights[0]
    assert np.isclose((targets @ weights).mean(), 1.0)
    np.testing.assert_allclose(weights[1] / weights[0], 2**0.5, rtol=1e-5)


def test_train_and_valid_are_joined_face_by_face(script):
    train = {"x": np.zeros((3, 48, 48), np.uint8), "y": np.array([0, 1, 2])}
    valid = {"x": np.ones((2, 48, 48), np.uint8), "y": np.array([7, 6])}
    joined = script.joined_splits(train, valid)
    assert joined["y"].tolist() == [0, 1, 2, 7, 6]
    assert joined["x"].shape == (5, 48, 48) and joined["x"][3:].all() and not joined["x"][:3].any()
