"""scripts/_packs.py: the data packs a lent GPU machine trains from (faces coded losslessly)."""

import io
import lzma

import numpy as np
import pytest

from engine.data.datasets import read_dataset
from engine.data.images import load_image
from engine.resources import shared_dir
from scripts._packs import decode_faces, encode_faces, read_pack, write_pack

FERPLUS = shared_dir() / "data" / "ferplus"


def test_faces_come_back_exactly_whatever_their_pixels():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (20, 7, 9), dtype=np.uint8)
    edges = np.zeros((3, 48, 48), np.uint8)
    edges[:, ::2] = 255
    for faces in (noise, edges):
        coded = encode_faces(faces)
        assert coded.dtype == np.uint8 and coded.shape == faces.shape
        np.testing.assert_array_equal(decode_faces(coded), faces)


def test_a_smooth_face_codes_to_small_residuals():
    ramp = np.add.outer(np.arange(48), np.arange(48)).astype(np.uint8)[None]
    coded = encode_faces(ramp)
    assert coded[:, 1:, 1:].max() <= 2  # predicted from its neighbours to within one grey level


def test_only_uint8_stacks_of_faces_are_coded():
    with pytest.raises(ValueError, match="uint8"):
        encode_faces(np.zeros((2, 48, 48), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        encode_faces(np.zeros((48, 48), np.uint8))


def test_a_pack_returns_its_arrays_the_named_faces_decoded(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "train_x": rng.integers(0, 256, (5, 48, 48), dtype=np.uint8),
        "train_y": np.arange(5),
        "train_soft": rng.random((5, 8)).astype(np.float32),
    }
    path = tmp_path / "pack.xz"
    write_pack(path, arrays, faces=("train_x",))
    back = read_pack(path)
    assert sorted(back) == sorted(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype


def test_a_pack_written_before_faces_were_coded_reads_as_it_is(tmp_path):
    faces = np.arange(2 * 48 * 48, dtype=np.uint64).reshape(2, 48, 48).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, train_x=faces)
    path = tmp_path / "old.xz"
    with lzma.open(path, "wb") as fh:
        fh.write(buffer.getvalue())
    np.testing.assert_array_equal(read_pack(path)["train_x"], faces)


def test_a_file_that_is_no_pack_is_named(tmp_path):
    path = tmp_path / "pack.xz"
    path.write_bytes(b"not xz at all")
    with pytest.raises(ValueError, match="pack.xz: not a data pack"):
        read_pack(path)


@pytest.mark.skipif(not FERPLUS.is_dir(), reason="../shared/data/ferplus is absent")
def test_ferplus_faces_pack_smaller_than_plain_xz_and_come_back_exactly(tmp_path):
    records = read_dataset(f"ferplus:{FERPLUS}", split="test", limit=200).records
    faces = np.stack([load_image(r)[:, :, 0] for r in records])
    plain = len(lzma.compress(faces.tobytes(), preset=9 | lzma.PRESET_EXTREME))
    path = tmp_path / "faces.xz"
    write_pack(path, {"test_x": faces}, faces=("test_x",))
    np.testing.assert_array_equal(read_pack(path)["test_x"], faces)
    assert path.stat().st_size < 0.95 * plain
