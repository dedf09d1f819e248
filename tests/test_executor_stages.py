"""The sharded prepare stages on Ray: ``--executor ray`` writes the same attack, activations and sweep arrays as the
local executor, and a run killed in the middle of a stage goes on with the batches still missing only.

The Ray tests start a local Ray instance with 2 CPUs (slow: Ray's start alone takes seconds). The reference is
the local executor's store of the same configuration, a run of the stages as they ran before they were sharded
(the existing stage tests compare those arrays with the attack classes and plain forward passes)."""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from advlens.pipeline import PrepareConfig, prepare
from advlens.pipeline.executor import LocalExecutor, RayExecutor, run_sharded, shards

pytestmark = pytest.mark.usefixtures("one_thread")
prepare_module = importlib.import_module("advlens.pipeline.prepare")  # the module, not the function it exports

STAGES = ("predict", "attack", "activations", "sweep")
COMPARED = ("attack", "activations", "sweep")
BATCH = 8  # 64 images: 8 attack batches, several activation batches, sweep parts of 8 // 2 = 4 images
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CONFIG = dict(dataset="fashion-mnist", limit=64, eps=0.05, steps=3, batch_size=BATCH, sweep_eps=(0.02, 0.1),
              sweep_steps=2, sweep_per_class=3, seed=5, tsne_perplexity=5.0)


def _config(executor: str) -> PrepareConfig:
    config = PrepareConfig(**CONFIG, executor=executor)
    config.sweep_precision = "float32"  # the same on every CPU (auto picks bfloat16 where it is native)
    return config


@pytest.fixture(scope="module")
def model_and_data():
    """The demo model (a package module, so that Ray's workers unpickle it) on the first Fashion-MNIST test
    images (the Debian package the Makefile installs: its absence fails the tests)."""
    from advlens.data import load_dataset
    from advlens.models.registry import load_model

    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"Fashion-MNIST is not installed at {FASHION_DIR}: install the Debian package "
                    "dataset-fashion-mnist (`make setup` does)", pytrace=False)
    return load_model("fashion-resnet"), load_dataset("fashion-mnist", "test", str(FASHION_DIR))


@pytest.fixture(scope="module")
def local_store(model_and_data, tmp_path_factory):
    model, data = model_and_data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray task of one CPU
    try:
        return prepare(_config("local"), tmp_path_factory.mktemp("local") / "store", model=model, data=data,
                       stages=STAGES)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for the module's tests (RayExecutor finds it initialised)."""
    import ray  # the dev extra installs it: a missing Ray fails these tests

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _assert_same_arrays(store, reference) -> None:
    """Every array of the compared stages' groups, bit for bit."""
    for stage in COMPARED:
        names = sorted(reference.group(stage).array_keys())
        assert sorted(store.group(stage).array_keys()) == names, stage
        for name in names:
            np.testing.assert_array_equal(store.load(stage, name), reference.load(stage, name),
                                          err_msg=f"{stage}/{name}")


class Killed(Exception):
    pass


class Scripted:
    """Wraps an executor: records the batches each sharded run asks for, and dies (as a killed process would)
    after ``survive`` results of the run whose description starts with ``die_in``."""

    name = "ray"

    def __init__(self, inner, die_in: str | None = None, survive: int = 1) -> None:
        self.inner, self.die_in, self.survive = inner, die_in, survive
        self.asked: dict[str, list[int]] = {}

    def map(self, task, shared, parts, desc, inputs=None):
        key = desc.split(" (")[0]
        self.asked[key] = [part.start for part in parts]
        with contextlib.closing(self.inner.map(task, shared, parts, desc, inputs)) as results:
            for number, item in enumerate(results):
                if key == self.die_in and number == self.survive:
                    raise Killed(f"simulated kill in {desc}")
                yield item


def _run(model_and_data, root: Path, executor, monkeypatch):
    model, data = model_and_data
    monkeypatch.setattr(prepare_module, "make_executor", lambda *args, **kwargs: executor)
    return prepare(_config("ray"), root, model=model, data=data, stages=STAGES)


def _checkpointed(root: Path, stage: str, prefix: str = "") -> list[int]:
    return sorted(int(p.stem[len(prefix):]) for p in root.glob(f".work-{stage}-*/{prefix}[0-9]*.npz"))


def test_per_shard_inputs_are_read_only_for_the_missing_batches(tmp_path):
    x = np.arange(10, dtype=np.float64)
    read = []

    def inputs(part):
        read.append(part.start)
        return x[part]
    parts = shards(10, 4)
    first = list(run_sharded(LocalExecutor(), _double, None, parts[:2], tmp_path, "toy", inputs=inputs, prefix="a_"))
    assert read == [0, 4] and sorted(p.name for p in tmp_path.iterdir()) == ["a_00000000.npz", "a_00000004.npz"]
    read.clear()
    results = list(run_sharded(LocalExecutor(), _double, None, parts, tmp_path, "toy", inputs=inputs, prefix="a_"))
    assert read == [8], "the finished batches come from their checkpoints"
    assert [part.start for part, _ in results] == [0, 4, 8]
    np.testing.assert_array_equal(np.concatenate([r["value"] for _, r in results]), 2 * x)
    np.testing.assert_array_equal(first[1][1]["value"], [8.0, 10.0, 12.0, 14.0])


def _double(shared, part, values):
    return {"value": 2 * values}


@pytest.mark.slow
def test_ray_writes_the_same_stages_as_the_local_executor(model_and_data, local_store, local_ray, tmp_path,
                                                          monkeypatch):
    recorded = Scripted(RayExecutor())
    store = _run(model_and_data, tmp_path / "ray", recorded, monkeypatch)
    assert int(local_store.group("activations").attrs["pairs"]) >= 3 * BATCH // 2, "too few successes to shard"
    assert recorded.asked["activations"] == [p.start for p in shards(store.group("activations").attrs["pairs"],
                                                                     BATCH)]
    assert set(recorded.asked) == {"attack", "activations", "sweep pgd", "sweep fgsm"}
    _assert_same_arrays(store, local_store)


@pytest.mark.slow
def test_a_killed_ray_run_goes_on_with_the_missing_batches_only(model_and_data, local_store, local_ray, tmp_path,
                                                                monkeypatch):
    root = tmp_path / "ray"
    pairs = int(local_store.group("activations").attrs["pairs"])
    sampled = len(local_store.load("sweep", "sample_index"))
    chunk = int(local_store.group("sweep").attrs["chunk"])
    with pytest.raises(Killed):
        _run(model_and_data, root, Scripted(RayExecutor(), die_in="activations"), monkeypatch)
    stages = json.loads((root / "manifest.json").read_text())["stages"]
    assert "attack" in stages and "activations" not in stages
    finished = _checkpointed(root, "activations")
    assert len(finished) == 1, "one batch came back before the kill; those in flight were cancelled"

    second = Scripted(RayExecutor(), die_in="sweep pgd")
    with pytest.raises(Killed):
        _run(model_and_data, root, second, monkeypatch)
    every = [p.start for p in shards(pairs, BATCH)]
    assert second.asked["activations"] == [s for s in every if s not in finished]
    assert "attack" not in second.asked, "a finished stage is not run again"
    pgd_finished = _checkpointed(root, "sweep", "pgd_")
    assert len(pgd_finished) == 1

    third = Scripted(RayExecutor())
    store = _run(model_and_data, root, third, monkeypatch)
    chunks = [p.start for p in shards(sampled, chunk)]
    assert third.asked == {"sweep pgd": [s for s in chunks if s not in pgd_finished], "sweep fgsm": chunks}
    assert not list(root.glob(".work-*"))
    _assert_same_arrays(store, local_store)


@pytest.mark.slow
def test_datapaths_on_ray_keep_the_same_results_and_skip_the_stored_pairs(model_and_data, local_store, local_ray,
                                                                           tmp_path, capsys, monkeypatch):
    from advlens.analysis import Session
    from advlens.cli import main
    from advlens.pipeline import executor as executor_module
    from advlens.store.manifest import CORE_STAGES

    model, data = model_and_data
    complete = tmp_path / "complete"  # a session opens complete stores only: add statistics and projections
    shutil.copytree(local_store.root, complete)
    prepare(_config("local"), complete, model=model, data=data, stages=CORE_STAGES)
    quick = ["--pairs", "top:3", "--steps", "10", "--targets", "2"]
    roots = {name: tmp_path / name for name in ("local", "ray")}
    for root in roots.values():
        shutil.copytree(complete, root)
    assert main(["datapaths", str(roots["local"]), *quick]) == 0
    assert main(["datapaths", str(roots["ray"]), *quick[:1], "top:1", *quick[2:]]) == 0  # one pair already there
    recorded = Scripted(RayExecutor())
    monkeypatch.setattr(executor_module, "make_executor", lambda *args, **kwargs: recorded)
    capsys.readouterr()
    assert main(["datapaths", str(roots["ray"]), *quick, "--executor", "ray"]) == 0
    assert "1 already stored, 2 to compute" in capsys.readouterr().out
    assert recorded.asked == {"datapaths": [0, 1]}
    sessions = {name: Session(root) for name, root in roots.items()}
    pairs = np.flatnonzero(sessions["local"].datapath_examples(targets=2, steps=10).stored)
    assert len(pairs) == 3
    for pair in pairs:
        mine, theirs = (sessions[name].stored_pair_datapaths(int(pair), targets=2, steps=10) for name in roots)
        assert theirs is not None, f"pair {pair} was not kept by the Ray run"
        (arrays, attrs), (other_arrays, other_attrs) = mine.to_arrays(), theirs.to_arrays()
        assert sorted(arrays) == sorted(other_arrays)
        for name in arrays:
            np.testing.assert_array_equal(other_arrays[name], arrays[name], err_msg=f"pair {pair}: {name}")
        assert {k: v for k, v in other_attrs.items() if k != "seconds"} == \
            {k: v for k, v in attrs.items() if k != "seconds"}


@pytest.mark.slow
def test_ray_tasks_use_their_own_cpus_as_threads_and_few_shards_are_in_flight(local_ray):
    from advlens.pipeline.executor import IN_FLIGHT

    torch_threads = torch.get_num_threads

    def report_threads(shared, part, values):  # a local function: Ray ships it by value
        return {"threads": np.array(torch_threads()), "value": values}
    read = []

    def inputs(part):
        read.append(part.start)
        return np.full(1, part.start)
    parts = shards(10, 1)
    results = []
    for part, result in RayExecutor(cpus_per_task=2).map(report_threads, None, parts, "threads", inputs):
        if not results:
            # the window (IN_FLIGHT tasks per slot of 2 CPUs: one slot), then one more as the first result came back
            assert len(read) == IN_FLIGHT + 1
        results.append((part, result))
    assert sorted(read) == list(range(10))
    assert all(int(result["threads"]) == 2 for _, result in results), "two torch threads in a task of two CPUs"
    assert sorted(int(result["value"][0]) for _, result in results) == list(range(10))


def test_a_worker_runs_its_task_with_the_threads_of_its_cpus_whatever_the_process_had():
    from advlens.pipeline.executor import _run_on_worker

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # as a reused worker process left by a task of three CPUs
        result = _run_on_worker(lambda shared, part: {"threads": np.array(torch.get_num_threads())}, None, 1,
                                slice(0, 1))
    finally:
        torch.set_num_threads(threads)
    assert int(result["threads"]) == 1
