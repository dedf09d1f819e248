"""`prepare` never deletes what advlens did not write, recovers a corrupt manifest with --overwrite, locks the
store against a second run, and leaves nothing half-written that blocks the next run (e.g. a full disk)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from advlens.data import ImageDataset
from advlens.errors import AdvlensError, StoreError
from advlens.pipeline import PrepareConfig, prepare, stages
from advlens.store import STAGES, StageWriter, open_store
from advlens.store.manifest import LOCK_FILE

from conftest import tiny_dataset, trained_tiny_model

CONFIG = dict(model="tests:tiny", dataset="tiny", eps=0.2, alpha=0.07, steps=5, batch_size=16, seed=3,
              tsne_perplexity=5.0)


def _config(**changes) -> PrepareConfig:
    return PrepareConfig(**{**CONFIG, **changes})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    data = tiny_dataset()
    labels = data.labels.clone()
    labels[::10] = (labels[::10] + 1) % 3
    model, data = trained_tiny_model(data), ImageDataset(data.images, labels, data.class_names, data.name, data.split)
    root = tmp_path_factory.mktemp("reference") / "store"
    prepare(_config(), root, model=model, data=data)
    return root, model, data


def _user_files(folder: Path) -> dict[str, bytes]:
    """A user's files: a note, a nested folder, and folders named like advlens's own."""
    files = {"notes.txt": b"my notes", "sub/data.bin": bytes(range(256))}
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def _assert_kept(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        assert (folder / name).read_bytes() == content, f"{name} was changed or deleted"


def _recording(monkeypatch) -> list[str]:
    calls: list[str] = []
    for name in STAGES:
        fn = stages.STAGE_FUNCTIONS[name]
        monkeypatch.setitem(stages.STAGE_FUNCTIONS, name,
                            lambda ctx, out, _fn=fn, _name=name: (calls.append(_name), _fn(ctx, out))[1])
    return calls


def test_overwrite_refuses_a_folder_that_is_not_a_store(reference, tmp_path):
    _, model, data = reference
    folder = tmp_path / "mine"
    files = _user_files(folder)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=r"not an advlens analysis store .*never deletes what it did not write"):
            prepare(_config(), folder, overwrite=overwrite, model=model, data=data)
    _assert_kept(folder, files)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "sub"], "nothing may be added either"


def test_a_foreign_manifest_is_never_overwritten(reference, tmp_path):
    _, model, data = reference
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": "my web app"}')
    with pytest.raises(StoreError, match="not an advlens manifest"):
        prepare(_config(), folder, overwrite=True, model=model, data=data)
    assert (folder / "manifest.json").read_text() == '{"name": "my web app"}'


def test_overwrite_replaces_only_what_advlens_wrote(reference, tmp_path):
    _, model, data = reference
    root = tmp_path / "store"
    shutil.copytree(reference[0], root)
    files = _user_files(root)
    store = prepare(_config(eps=0.1), root, overwrite=True, model=model, data=data)
    assert store.config["attack"]["eps"] == 0.1 and store.complete
    _assert_kept(root, files)


def test_a_corrupt_manifest_is_recovered_by_the_overwrite_its_message_recommends(reference, tmp_path):
    _, model, data = reference
    root = tmp_path / "store"
    shutil.copytree(reference[0], root)
    files = _user_files(root)
    (root / "manifest.json").write_text('{"format": "advlens-analysis-st')  # cut short by a crash
    with pytest.raises(StoreError, match=r"manifest.json is unreadable.*--overwrite"):
        open_store(root)
    with pytest.raises(StoreError, match=r"manifest.json is unreadable.*--overwrite"):
        prepare(_config(), root, model=model, data=data)
    store = prepare(_config(), root, overwrite=True, model=model, data=data)
    assert store.complete and all(problem is None for problem in store.verify().values())
    _assert_kept(root, files)


@pytest.fixture
def live_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def _lock(root: Path, pid: int) -> None:
    (root / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def test_a_running_prepare_locks_out_a_second_one(reference, tmp_path, live_pid):
    _, model, data = reference
    root = tmp_path / "store"
    shutil.copytree(reference[0], root)
    (root / ".partial-projections").mkdir()  # what the running prepare is writing
    (root / ".partial-projections" / "zarr.json").write_text("{}")
    _lock(root, live_pid)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=rf"being written by another `advlens prepare` \(pid {live_pid} "):
            prepare(_config(), root, overwrite=overwrite, model=model, data=data)
    assert (root / ".partial-projections" / "zarr.json").exists(), "the other run's partial stage was deleted"
    assert open_store(root).complete, "the locked store was changed"
    assert json.loads((root / LOCK_FILE).read_text())["pid"] == live_pid


def test_the_stale_lock_of_a_dead_prepare_is_taken_over(reference, tmp_path, monkeypatch):
    _, model, data = reference
    root = tmp_path / "store"
    shutil.copytree(reference[0], root)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    _lock(root, int(finished.stdout))  # that process has exited
    calls = _recording(monkeypatch)
    prepare(_config(), root, model=model, data=data)
    assert calls == [] and not (root / LOCK_FILE).exists()


def test_the_lock_is_released_when_a_stage_fails(reference, tmp_path, monkeypatch):
    _, model, data = reference

    def fail(ctx, out):
        raise RuntimeError("boom")

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "attack", fail)
    with pytest.raises(RuntimeError):
        prepare(_config(), tmp_path / "s", model=model, data=data)
    assert not (tmp_path / "s" / LOCK_FILE).exists()


def test_bad_parameters_are_refused_before_anything_is_written(reference, tmp_path):
    _, model, data = reference
    for changes in (dict(steps=0), dict(eps=-1.0), dict(alpha=0.0), dict(norm="l3"), dict(limit=0),
                    dict(attack="file"), dict(targeted=True, target_class=3), dict(seed=-1), dict(batch_size=0),
                    dict(device="tpu")):
        with pytest.raises(AdvlensError):
            prepare(_config(**changes), tmp_path / "s", model=model, data=data)
        assert not (tmp_path / "s").exists(), f"{changes} wrote before it was refused"
    store = prepare(_config(steps=4), tmp_path / "s", model=model, data=data)  # the corrected command
    assert store.complete and store.config["attack"]["steps"] == 4


def test_an_unfinished_store_of_another_configuration_starts_anew(reference, tmp_path, monkeypatch):
    _, model, data = reference

    def fail(ctx, out):
        raise KeyboardInterrupt

    monkeypatch.setitem(stages.STAGE_FUNCTIONS, "predict", fail)
    with pytest.raises(KeyboardInterrupt):
        prepare(_config(), tmp_path / "s", model=model, data=data)
    monkeypatch.undo()
    store = prepare(_config(eps=0.1), tmp_path / "s", model=model, data=data)  # nothing finished: nothing to keep
    assert store.complete and store.config["attack"]["eps"] == 0.1


def test_a_full_disk_leaves_nothing_that_blocks_the_next_run(reference, tmp_path, monkeypatch):
    _, model, data = reference
    original = StageWriter.array

    def full(self, name, values, chunks=None):
        if name == "adversarial":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "s" / ".partial-attack"))
        return original(self, name, values, chunks)

    monkeypatch.setattr(StageWriter, "array", full)
    with pytest.raises(StoreError, match=r"No space left on device.*the disk is full.*run the same command again"):
        prepare(_config(), tmp_path / "s", model=model, data=data)
    root = tmp_path / "s"
    assert not list(root.glob(".partial-*")) and not (root / LOCK_FILE).exists()
    assert not list(root.glob(".*.tmp")) and open_store(root).finished_stages == ["predict"]
    monkeypatch.undo()

    calls = _recording(monkeypatch)
    store = prepare(_config(), root, model=model, data=data)
    assert calls == list(STAGES[1:]) and store.complete
    np.testing.assert_array_equal(store.load("attack", "adversarial"),
                                  open_store(reference[0]).load("attack", "adversarial"))
