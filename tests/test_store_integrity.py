"""Verified store reads: a missing or damaged chunk is a StoreError that names the array and its rebuild command,
`advlens info --verify` names exactly the damaged arrays, and `prepare --redo` repairs them."""

from __future__ import annotations

import json

import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from advlens.cli import build_parser, main
from advlens.data import ImageDataset
from advlens.errors import StoreError
from advlens.pipeline import PrepareConfig, prepare, stages
from advlens.store import STAGES, open_store

from conftest import tiny_dataset, trained_tiny_model

CONFIG = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=16, seed=3,
              tsne_perplexity=5.0)


def _data() -> ImageDataset:
    data = tiny_dataset()
    labels = data.labels.clone()
    labels[::10] = (labels[::10] + 1) % 3
    return ImageDataset(data.images, labels, data.class_names, data.name, data.split)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One prepared store (tiny model, 47 pairs: 3 chunks of 16 activation maps), copied by each test."""
    model, data = trained_tiny_model(tiny_dataset()), _data()
    root = tmp_path_factory.mktemp("reference") / "store"
    prepare(PrepareConfig(**CONFIG), root, model=model, data=data)
    return root, model, data


@pytest.fixture
def store_copy(reference, tmp_path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(reference[0], root)
    return root


def _raw(root: Path, stage: str, name: str) -> zarr.Array:
    return zarr.open_group(str(root / stage), mode="r")[name]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verified_reads_equal_plain_reads_for_every_index_form(store_copy):
    expected = _raw(store_copy, "activations", "benign_maps")[...]
    maps = open_store(store_copy).array("activations", "benign_maps")
    count = len(expected)
    assert count > 32, "the fixture should give three chunks of maps"
    assert maps.shape == expected.shape == (count, 6, 4, 4) and maps.dtype == expected.dtype and len(maps) == count
    mask = np.zeros(count, bool)
    mask[[2, 17, 40]] = True
    for selection in (0, -1, slice(2, 40), slice(None, None, 7), Ellipsis, (5, 2), (slice(14, 20), Ellipsis, 0),
                      [33, 0, 17], np.array([count - 1, 3]), (np.int64(20), slice(1, 3))):
        np.testing.assert_array_equal(maps[selection], expected[selection], err_msg=repr(selection))
    np.testing.assert_array_equal(maps.get_orthogonal_selection(([0, 37], slice(None), [1, 3])),
                                  expected[np.ix_([0, 37], range(6), [1, 3], range(4))])
    np.testing.assert_array_equal(maps.get_orthogonal_selection((mask,)), expected[mask])
    np.testing.assert_array_equal(np.asarray(maps), expected)
    with pytest.raises(IndexError):
        maps[count]
    with pytest.raises(IndexError):
        maps[[0, count + 5]]


def test_a_missing_chunk_is_an_error_naming_the_array_not_zeros(store_copy):
    (store_copy / "activations" / "benign_maps" / "c" / "1" / "0" / "0" / "0").unlink()  # pairs 16..31
    assert not _raw(store_copy, "activations", "benign_maps")[16:32].any(), "plain Zarr reads zeros silently"
    store = open_store(store_copy)
    with pytest.raises(StoreError, match=r"activations/benign_maps .*missing chunk files c/1/0/0/0") as error:
        store.array("activations", "benign_maps")[20]
    assert "advlens prepare --model tests:tiny" in str(error.value)
    assert f"--out {store_copy} --redo activations" in str(error.value)
    with pytest.raises(StoreError, match="activations/benign_maps"):
        store.load("activations", "benign_maps")
    np.testing.assert_array_equal(store.array("activations", "benign_maps")[3],  # other chunks still read
                                  _raw(store_copy, "activations", "benign_maps")[3])


def test_a_damaged_chunk_is_a_store_error_not_a_codec_error(store_copy):
    _flip_byte(store_copy / "attack" / "benign" / "c" / "0" / "0" / "0" / "0")
    with pytest.raises(ValueError):  # what Zarr itself raises (a checksum mismatch)
        _raw(store_copy, "attack", "benign")[0]
    with pytest.raises(StoreError, match=r"attack/benign .*does not decode.*--redo attack"):
        open_store(store_copy).pair_images([0])


def test_damaged_array_metadata_names_the_array(store_copy):
    (store_copy / "activations" / "row" / "zarr.json").unlink()
    with pytest.raises(StoreError, match=r"activations/row .*metadata.*--redo activations"):
        open_store(store_copy).array("activations", "row")


def test_verify_names_exactly_the_damaged_arrays(store_copy, capsys):
    assert main(["info", str(store_copy), "--verify"]) == 0
    manifest = json.loads((store_copy / "manifest.json").read_text())
    recorded = sum(len(stage["arrays"]) for stage in manifest["stages"].values()) + 1  # + the weights
    assert recorded > 60  # the core stages, features and sweep
    assert f"verified: all {recorded} arrays and files" in capsys.readouterr().out

    (store_copy / "activations" / "benign_maps" / "c" / "2" / "0" / "0" / "0").unlink()
    _flip_byte(store_copy / "predict" / "probs" / "c" / "0" / "0")
    first = store_copy / "activations" / "adv_maps" / "c" / "0" / "0" / "0" / "0"
    second = store_copy / "activations" / "adv_maps" / "c" / "1" / "0" / "0" / "0"
    swapped = first.read_bytes()  # two valid chunks in each other's place: only the digest can tell
    first.write_bytes(second.read_bytes())
    second.write_bytes(swapped)

    code = main(["info", str(store_copy), "--verify"])
    captured = capsys.readouterr()
    assert code == 1
    damaged = {line.split()[1].rstrip(":") for line in captured.out.splitlines() if "DAMAGED" in line}
    assert damaged == {"activations/benign_maps", "predict/probs", "activations/adv_maps"}
    assert "missing chunk" in captured.out and "does not decode" in captured.out and "SHA-256" in captured.out
    assert f"--out {store_copy} --redo predict" in captured.err  # the first damaged stage and all after it


def test_redo_rebuilds_the_damaged_stage_and_its_dependents(reference, store_copy, monkeypatch):
    _, model, data = reference
    (store_copy / "activations" / "adv_pooled" / "c" / "0" / "0").unlink()
    command = open_store(store_copy).rebuild_command("activations")
    args = build_parser().parse_args(shlex.split(command)[1:])  # the command in the message parses
    assert args.redo == "activations" and Path(args.out) == store_copy

    calls = []
    for name in STAGES:
        fn = stages.STAGE_FUNCTIONS[name]
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, name,
                            lambda ctx, out, _fn=fn, _name=name: (calls.append(_name), _fn(ctx, out))[1])
    repaired = prepare(PrepareConfig(**CONFIG), store_copy, model=model, data=data, redo="activations")
    assert calls == ["activations", "projections"]  # statistics reads the attack stage only
    assert all(problem is None for problem in repaired.verify().values())
    original = open_store(reference[0])
    for stage in STAGES:
        for name in original.group(stage).array_keys():
            np.testing.assert_array_equal(repaired.load(stage, name), original.load(stage, name),
                                          err_msg=f"{stage}/{name}")


def test_weights_are_verified_and_copied_again_by_a_resume(reference, store_copy):
    _, model, data = reference
    _flip_byte(store_copy / "model.safetensors")
    store = open_store(store_copy)
    with pytest.raises(StoreError, match=r"model weights .*damaged.*advlens prepare"):
        store.weights_path()
    assert store.verify()["model.safetensors"] is not None
    prepare(PrepareConfig(**CONFIG), store_copy, model=model, data=data)
    assert open_store(store_copy).weights_path() == (store_copy / "model.safetensors").resolve()


def test_every_chunk_is_written_also_one_of_fill_values(reference, tmp_path, monkeypatch):
    """Zarr skips chunks equal to the fill value by default; then a missing chunk could not mean damage."""
    _, model, data = reference

    def zeros(ctx, out):
        out.array("zeros", np.zeros((10, 3), np.float32), chunks=(4, 3))
        out.array("flags", np.zeros(10, bool), chunks=(4,))

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "projections", zeros)
    store = prepare(PrepareConfig(**CONFIG), tmp_path / "s", model=model, data=data)
    np.testing.assert_array_equal(store.load("projections", "zeros"), np.zeros((10, 3)))
    assert not store.load("projections", "flags").any()
    assert store.verify()["projections/zeros"] is None


def test_a_stage_that_leaves_chunks_unwritten_is_not_committed(reference, tmp_path, monkeypatch):
    _, model, data = reference

    def partial(ctx, out):
        array = out.empty("half", (10,), "float32", (4,))
        array[:4] = 1.0

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "projections", partial)
    with pytest.raises(StoreError, match="left 2 chunk"):
        prepare(PrepareConfig(**CONFIG), tmp_path / "s", model=model, data=data)
    assert "projections" not in open_store(tmp_path / "s").finished_stages
