"""Dataset loaders on small generated files: Fashion-MNIST IDX, CIFAR-10 batches, image folders, .npz."""

from __future__ import annotations

import gzip
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from advlens.data import ImageDataset, load_cifar10, load_dataset, load_fashion_mnist, load_image_folder, load_npz
from advlens.data.cifar import CIFAR10_CLASSES
from advlens.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_idx
from advlens.errors import DatasetError

# --------------------------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding: magic 0x0000 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_fashion(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "t10k",
                  gz: bool = True) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, payload in ((f"{prefix}-images-idx3-ubyte", idx_bytes(images)),
                          (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels))):
        path = folder / (stem + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(payload) if gz else payload)
        paths.append(path)
    return paths[0], paths[1]


def fashion_arrays(n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 27, 27] = 0, 255  # both ends of the range
    labels = np.arange(n, dtype=np.uint8) % 10
    return images, labels


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], protocol: int = 4) -> None:
    with open(path, "wb") as handle:
        pickle.dump({b"batch_label": b"test", b"data": data, b"labels": labels,
                     b"filenames": [b"x.png"] * len(labels)}, handle, protocol=protocol)


def write_cifar_meta(path: Path, names: list[str], protocol: int = 4) -> None:
    with open(path, "wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_cases_per_batch": 3}, handle,
                    protocol=protocol)


class _RunsShell:
    """Unpickling this calls os.system: a loader that executes pickles would create the marker file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# ------------------------------------------------------------------------------------ Fashion-MNIST IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_fashion_idx_round_trip_exact_values(tmp_path, gz):
    images, labels = fashion_arrays(n=4)
    write_fashion(tmp_path, images, labels, gz=gz)
    ds = load_fashion_mnist("test", tmp_path)
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (4, 1, 28, 28) and ds.images.dtype == torch.float32
    expected = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    assert torch.equal(ds.images, expected)
    assert ds.images[0, 0, 0, 0] == 0.0 and ds.images[0, 0, 27, 27] == 1.0
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
    assert ds.class_names == FASHION_MNIST_CLASSES and ds.num_classes == 10
    assert ds.name == "fashion-mnist" and ds.split == "test" and len(ds) == 4
    assert ds.image_shape == (1, 28, 28)


def test_fashion_train_split_reads_train_files(tmp_path):
    test_images, test_labels = fashion_arrays(n=2, seed=1)
    train_images, train_labels = fashion_arrays(n=5, seed=2)
    write_fashion(tmp_path, test_images, test_labels, prefix="t10k")
    write_fashion(tmp_path, train_images, train_labels, prefix="train")
    ds = load_fashion_mnist("train", tmp_path)
    assert len(ds) == 5 and ds.split == "train"
    assert torch.equal(ds.images[:, 0], torch.from_numpy(train_images.astype(np.float32) / 255.0))


def test_load_dataset_fashion_unpacks_and_accepts_aliases(tmp_path):
    images, labels = fashion_arrays(n=3)
    write_fashion(tmp_path, images, labels)
    imgs, labs, names = load_dataset("fashion-mnist", "test", tmp_path)
    assert imgs.shape == (3, 1, 28, 28) and labs.tolist() == labels.tolist() and names == FASHION_MNIST_CLASSES
    for alias in ("Fashion-MNIST", "fashion_mnist", "fmnist"):
        assert torch.equal(load_dataset(alias, "test", str(tmp_path)).images, imgs)


def test_read_idx_other_dtypes(tmp_path):
    array = np.array([[1, -2, 70000], [0, 5, -70000]], dtype=np.int32)
    path = tmp_path / "ints-idx2"
    path.write_bytes(idx_bytes(array, 0x0C))
    out = read_idx(path)
    assert out.shape == (2, 3) and out.tolist() == array.tolist()


def test_fashion_missing_file_names_path_and_package(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_fashion_mnist("test", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
    assert "dataset-fashion-mnist" in message


def test_fashion_missing_labels_file_named(tmp_path):
    images, labels = fashion_arrays(n=2)
    _, label_path = write_fashion(tmp_path, images, labels)
    label_path.unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist("test", tmp_path)


def test_fashion_truncated_idx(tmp_path):
    images, labels = fashion_arrays(n=3)
    image_path, _ = write_fashion(tmp_path, images, labels, gz=False)
    image_path.write_bytes(image_path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated") as info:
        load_fashion_mnist("test", tmp_path)
    assert str(image_path) in str(info.value)


def test_idx_header_only_and_trailing_bytes(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")  # header cut inside the first dimension
    with pytest.raises(DatasetError):
        read_idx(path)
    path.write_bytes(idx_bytes(np.zeros((2, 2), np.uint8)) + b"\x00")  # one byte too many
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x03", b"\x00\x00\x07\x03", b"\x00\x00"],
                         ids=["nonzero-first-byte", "unknown-type", "too-short"])
def test_idx_bad_magic(tmp_path, magic):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(magic + bytes(50))
    with pytest.raises(DatasetError, match="bad magic") as info:
        read_idx(path)
    assert "dataset-fashion-mnist" in str(info.value)


def test_fashion_labels_file_with_image_magic_refused(tmp_path):
    images, labels = fashion_arrays(n=2)
    write_fashion(tmp_path, images, labels)
    # a labels file that is really a 3-d (image) IDX
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    with pytest.raises(DatasetError, match="disagree"):
        load_fashion_mnist("test", tmp_path)


def test_fashion_count_mismatch_and_bad_labels(tmp_path):
    images, labels = fashion_arrays(n=3)
    write_fashion(tmp_path, images, labels[:2])
    with pytest.raises(DatasetError, match="disagree"):
        load_fashion_mnist("test", tmp_path)
    write_fashion(tmp_path, images, np.array([0, 10, 1], np.uint8))
    with pytest.raises(DatasetError, match="outside 0..9"):
        load_fashion_mnist("test", tmp_path)


def test_fashion_not_gzip_and_truncated_gzip(tmp_path):
    images, labels = fashion_arrays(n=2)
    image_path, _ = write_fashion(tmp_path, images, labels)
    image_path.write_bytes(b"this is not gzip data at all" * 10)
    with pytest.raises(DatasetError, match="cannot read IDX file"):
        load_fashion_mnist("test", tmp_path)
    full = gzip.compress(idx_bytes(images))
    image_path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError, match="cannot read IDX file"):
        load_fashion_mnist("test", tmp_path)
    stored = bytearray(full)  # random pixels are stored, not coded: scrambling them breaks the CRC
    for i in range(40, len(stored) - 40):
        stored[i] ^= 0xFF
    image_path.write_bytes(bytes(stored))
    with pytest.raises(DatasetError, match="CRC"):
        load_fashion_mnist("test", tmp_path)


def test_fashion_corrupt_gzip_stream(tmp_path):
    images = np.tile(np.arange(28, dtype=np.uint8) * 9, (2, 28, 1))  # compressible: a Huffman-coded stream
    image_path, _ = write_fashion(tmp_path, images, np.array([0, 1], np.uint8))
    blob = bytearray(image_path.read_bytes())
    for i in range(20, len(blob) - 20):  # keep the gzip header, scramble the deflate data
        blob[i] ^= 0xFF
    image_path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match="cannot read IDX file"):
        load_fashion_mnist("test", tmp_path)


def test_fashion_unknown_split(tmp_path):
    with pytest.raises(DatasetError, match="unknown split"):
        load_fashion_mnist("validation", tmp_path)


def read_idx_plainly(path: Path, header: int) -> np.ndarray:
    """The IDX payload read without advlens: gunzip, skip the header, unsigned bytes."""
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read()[header:], dtype=np.uint8)


def test_real_fashion_mnist_test_split():
    # the Makefile installs the Debian package: its absence is a setup bug, not a reason to skip
    images_file = FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz"
    labels_file = FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz"
    if not (images_file.is_file() and labels_file.is_file()):
        pytest.fail(f"{FASHION_MNIST_DIR} lacks the test split: the Debian package dataset-fashion-mnist, which "
                    "`make setup` installs, is not installed", pytrace=False)
    ds = load_dataset("fashion-mnist", "test")
    pixels = read_idx_plainly(images_file, 16).reshape(10000, 28, 28)  # magic + 3 dimensions = 16 bytes
    labels = read_idx_plainly(labels_file, 8)  # magic + 1 dimension
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.equal(ds.images[:, 0], torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0)))
    assert ds.labels.tolist() == labels.tolist()
    assert ds.labels[:5].tolist() == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, trouser, shirt
    assert ds.class_names[9] == "Ankle boot" and ds.class_names[0] == "T-shirt/top"
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert ds.labels.shape == (10000,) and len(ds.class_names) == 10
    assert torch.bincount(ds.labels, minlength=10).tolist() == [1000] * 10


# ----------------------------------------------------------------------------------------------- CIFAR-10


def test_cifar_chw_layout_known_pixel(tmp_path):
    data = np.zeros((2, 3072), dtype=np.uint8)
    # image 1, channel 2 (blue), row 5, column 7; CIFAR rows hold 1024 R, then 1024 G, then 1024 B values
    data[1, 2 * 1024 + 5 * 32 + 7] = 200
    data[0, 0 * 1024 + 31 * 32 + 0] = 255  # image 0, red, bottom-left corner
    write_cifar_batch(tmp_path / "test_batch", data, [3, 9])
    ds = load_cifar10("test", tmp_path)
    assert ds.images.shape == (2, 3, 32, 32) and ds.images.dtype == torch.float32
    assert ds.images[1, 2, 5, 7] == pytest.approx(200 / 255)
    assert ds.images[0, 0, 31, 0] == 1.0
    assert int((ds.images != 0).sum()) == 2
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [3, 9]
    assert ds.class_names == CIFAR10_CLASSES and ds.name == "cifar10"


def test_cifar_meta_names_and_subfolder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    write_cifar_batch(folder / "test_batch", data, [0, 1, 2])
    names = [f"class{i}" for i in range(10)]
    write_cifar_meta(folder / "batches.meta", names)
    images, labels, class_names = load_dataset("cifar10", "test", tmp_path)  # parent folder also works
    assert class_names == tuple(names)
    assert torch.equal(images, torch.from_numpy(data.reshape(3, 3, 32, 32).astype(np.float32) / 255.0))
    assert labels.tolist() == [0, 1, 2]


def test_cifar_train_concatenates_five_batches_in_order(tmp_path):
    for i in range(1, 6):
        data = np.full((2, 3072), i * 10, dtype=np.uint8)
        write_cifar_batch(tmp_path / f"data_batch_{i}", data, [i, i])
    ds = load_dataset("cifar-10", "train", tmp_path)
    assert len(ds) == 10 and ds.labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [round(float(v) * 255) for v in ds.images[::2, 0, 0, 0]] == [10, 20, 30, 40, 50]


def test_cifar_missing_batch(tmp_path):
    write_cifar_batch(tmp_path / "data_batch_1", np.zeros((1, 3072), np.uint8), [0])
    with pytest.raises(DatasetError, match="data_batch_2") as info:
        load_cifar10("train", tmp_path)
    assert "cifar-10-batches-py" in str(info.value)
    with pytest.raises(DatasetError, match="not shipped"):
        load_cifar10("test", None)
    with pytest.raises(DatasetError, match="unknown split"):
        load_cifar10("valid", tmp_path)


def test_cifar_pickle_with_code_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned"
    evil = {b"data": _RunsShell(f"touch {marker}"), b"labels": [0]}
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump(evil, handle, protocol=4)
    with pytest.raises(DatasetError, match="refusing") as info:
        load_cifar10("test", tmp_path)
    assert "system" in str(info.value)
    assert not marker.exists()


def test_cifar_meta_with_code_is_refused_without_side_effect(tmp_path):
    marker = tmp_path / "pwned-meta"
    write_cifar_batch(tmp_path / "test_batch", np.zeros((1, 3072), np.uint8), [0])
    with open(tmp_path / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": _RunsShell(f"touch {marker}")}, handle, protocol=4)
    with pytest.raises(DatasetError, match="batches.meta"):
        load_cifar10("test", tmp_path)
    assert not marker.exists()


def test_cifar_corrupt_and_malformed_batches(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x04garbage that is no pickle")
    with pytest.raises(DatasetError, match="cannot read CIFAR-10 batch"):
        load_cifar10("test", tmp_path)
    write_cifar_batch(path, np.zeros((2, 100), np.uint8), [0, 1])  # wrong row width
    with pytest.raises(DatasetError, match="has data"):
        load_cifar10("test", tmp_path)
    write_cifar_batch(path, np.zeros((2, 3072), np.uint8), [0])  # count mismatch
    with pytest.raises(DatasetError, match="has data"):
        load_cifar10("test", tmp_path)
    write_cifar_batch(path, np.zeros((2, 3072), np.uint8), [0, 10])
    with pytest.raises(DatasetError, match="outside 0..9"):
        load_cifar10("test", tmp_path)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_written_with_other_pickle_protocols(tmp_path, protocol):
    data = np.arange(3072, dtype=np.int64).astype(np.uint8).reshape(1, 3072)
    write_cifar_batch(tmp_path / "test_batch", data, [4], protocol=protocol)
    ds = load_cifar10("test", tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(data.reshape(1, 3, 32, 32).astype(np.float32) / 255.0))


# ------------------------------------------------------------------------------------------- image folder


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_labels_follow_sorted_class_names(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {name: rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8) for name in ("z1", "z2", "a1")}
    # created in non-sorted order: class "zebra" first, "ant" second
    _save_png(tmp_path / "zebra" / "b.png", pictures["z2"])
    _save_png(tmp_path / "zebra" / "a.png", pictures["z1"])
    _save_png(tmp_path / "ant" / "only.png", pictures["a1"])
    (tmp_path / "zebra" / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path)
    assert ds.class_names == ("ant", "zebra")
    assert ds.labels.tolist() == [0, 1, 1]
    assert ds.images.shape == (3, 3, 4, 5) and ds.images.dtype == torch.float32
    for i, key in enumerate(["a1", "z1", "z2"]):  # classes sorted, files sorted within a class
        expected = torch.from_numpy(pictures[key].transpose(2, 0, 1).astype(np.float32) / 255.0)
        assert torch.equal(ds.images[i], expected)


def test_image_folder_grey_scale_and_split_subfolder(tmp_path):
    grey = np.array([[0, 64], [128, 255]], dtype=np.uint8)
    _save_png(tmp_path / "test" / "cat" / "0.png", grey)
    _save_png(tmp_path / "test" / "dog" / "0.png", 255 - grey)
    _save_png(tmp_path / "train" / "cat" / "0.png", grey)
    images, labels, names = load_dataset("folder", "test", tmp_path)
    assert images.shape == (2, 1, 2, 2) and names == ("cat", "dog") and labels.tolist() == [0, 1]
    assert images[0, 0].tolist() == [[0.0, pytest.approx(64 / 255)], [pytest.approx(128 / 255), 1.0]]
    assert images[1, 0, 0, 0] == 1.0
    assert len(load_image_folder(tmp_path, "train")) == 1


def test_image_folder_sizes(tmp_path):
    _save_png(tmp_path / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
    _save_png(tmp_path / "b" / "0.png", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="size="):
        load_image_folder(tmp_path)
    ds = load_image_folder(tmp_path, size=(3, 5))
    assert ds.images.shape == (2, 3, 3, 5)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no class subfolders"):
        load_image_folder(tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.md").write_text("x")
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path)
    (tmp_path / "cls" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="broken.png"):
        load_image_folder(tmp_path)
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("folder", "test", None)


def test_image_folder_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "x.png").write_bytes(b"never read")
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` raise ImportError
    with pytest.raises(DatasetError, match="pip install pillow"):
        load_image_folder(tmp_path)


# ---------------------------------------------------------------------------------------------------- npz


def test_npz_grey_uint8_without_class_names(tmp_path):
    images = np.array([[[0, 255], [51, 102]], [[1, 2], [3, 4]]], dtype=np.uint8)  # N×H×W
    path = tmp_path / "grey.npz"
    np.savez(path, images=images, labels=np.array([2, 0]))
    ds = load_npz(path)
    assert ds.images.shape == (2, 1, 2, 2)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images.astype(np.float32) / 255.0))
    assert ds.images[0, 0, 0, 1] == 1.0
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [2, 0]
    assert ds.class_names == ("0", "1", "2") and ds.name == "npz:grey"


def test_npz_channels_last_uint8_is_transposed(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)  # N×H×W×C
    images[1, 4, 2, 0], images[1, 4, 2, 1], images[1, 4, 2, 2] = 10, 20, 30
    path = tmp_path / "hwc.npz"
    np.savez(path, images=images, labels=np.array([0, 1]), class_names=np.array(["cat", "dog"]))
    images_t, labels, names = load_dataset("npz", "test", path)
    assert images_t.shape == (2, 3, 5, 6) and images_t.is_contiguous()
    assert [round(float(v) * 255) for v in images_t[1, :, 4, 2]] == [10, 20, 30]
    assert torch.equal(images_t, torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0))
    assert names == ("cat", "dog") and labels.tolist() == [0, 1]


def test_npz_channels_first_float_kept(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.random((3, 3, 4, 4), dtype=np.float32)
    images[0, 2, 1, 3] = 1.0
    path = tmp_path / "chw.npz"
    np.savez(path, images=images, labels=np.array([1, 1, 0]), class_names=np.array(["no", "yes"]))
    ds = load_dataset(str(path))  # a path ending in .npz works as the name
    assert torch.equal(ds.images, torch.from_numpy(images))
    assert ds.class_names == ("no", "yes") and ds.labels.tolist() == [1, 1, 0]


def test_npz_errors(tmp_path):
    path = tmp_path / "bad.npz"
    with pytest.raises(DatasetError, match="missing .npz"):
        load_npz(path)
    np.savez(path, images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match="labels"):
        load_npz(path)
    np.savez(path, images=np.full((1, 1, 2, 2), 1.5, np.float32), labels=np.array([0]))
    with pytest.raises(DatasetError, match=r"\[0, 1\]"):
        load_npz(path)
    np.savez(path, images=np.full((1, 1, 2, 2), -0.1, np.float32), labels=np.array([0]))
    with pytest.raises(DatasetError, match=r"\[0, 1\]"):
        load_npz(path)
    np.savez(path, images=np.zeros((2, 2, 2), np.uint8), labels=np.array([0, 2]), class_names=np.array(["a", "b"]))
    with pytest.raises(DatasetError, match="class names"):
        load_npz(path)
    np.savez(path, images=np.zeros((2, 2, 2), np.uint8), labels=np.array([0, -1]))
    with pytest.raises(DatasetError, match="≥ 0"):
        load_npz(path)
    np.savez(path, images=np.zeros((2, 2), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DatasetError, match="N×H×W"):
        load_npz(path)
    path.write_bytes(b"garbage, not a zip archive")
    with pytest.raises(DatasetError, match="cannot read"):
        load_npz(path)
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("npz", "test", None)


def test_npz_object_arrays_are_not_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, images=np.zeros((1, 2, 2), np.uint8), labels=np.array([0]),
             class_names=np.array(["a", None], dtype=object))
    with pytest.raises(DatasetError, match="cannot read"):
        load_npz(path)


def test_npz_count_mismatch_is_dataset_error(tmp_path):
    path = tmp_path / "mismatch.npz"
    np.savez(path, images=np.zeros((3, 2, 2), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DatasetError):
        load_npz(path)


def test_unknown_dataset_name_lists_choices():
    with pytest.raises(DatasetError, match="unknown dataset 'mnist-2'") as info:
        load_dataset("mnist-2")
    for name in ("fashion-mnist", "cifar10", "folder", "npz"):
        assert name in str(info.value)


def test_image_dataset_validates_shapes():
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 4, 4), torch.zeros(2, dtype=torch.int64), ("a",), "x", "test")
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.int64), ("a",), "x", "test")
