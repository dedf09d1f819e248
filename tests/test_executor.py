"""Sharded stages: the local and the Ray executor run the same task on the same batches and give the same
arrays; checkpoints let a killed run go on with the batches still missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advlens.errors import ConfigError
from advlens.pipeline.executor import LocalExecutor, RayExecutor, make_executor, run_sharded, shards


def square_rows(shared: dict, part: slice) -> dict[str, np.ndarray]:
    shared["calls"].append(part.start)
    return {"value": shared["x"][part] ** 2}


class Killed(Exception):
    pass


class DyingExecutor(LocalExecutor):
    """Runs ``survive`` batches, then dies as a killed process would."""

    def __init__(self, survive: int) -> None:
        self.survive = survive

    def map(self, task, shared, parts, desc, inputs=None):
        for number, item in enumerate(super().map(task, shared, parts, desc, inputs)):
            if number == self.survive:
                raise Killed
            yield item


def test_a_killed_run_goes_on_with_the_missing_batches_only(tmp_path):
    x = np.arange(23, dtype=np.float64)
    parts = shards(23, 5)
    assert [(p.start, p.stop) for p in parts] == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    shared = {"x": x, "calls": []}
    with pytest.raises(Killed):
        list(run_sharded(DyingExecutor(survive=2), square_rows, shared, parts, tmp_path, "toy"))
    assert shared["calls"] == [0, 5, 10]  # the third batch was in flight when the run died
    shared["calls"].clear()
    results = list(run_sharded(LocalExecutor(), square_rows, shared, parts, tmp_path, "toy"))
    assert shared["calls"] == [10, 15, 20]
    assert [part.start for part, _ in results] == [0, 5, 10, 15, 20]
    assert np.array_equal(np.concatenate([r["value"] for _, r in results]), x ** 2)


def test_bad_executor_options_are_refused_before_any_work():
    with pytest.raises(ConfigError, match="choose one of local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(ConfigError, match="at least 1"):
        RayExecutor(cpus_per_task=0)


@pytest.mark.slow
def test_ray_and_local_executors_give_equal_attack_batches(tmp_path, one_thread):
    import ray  # the dev extra installs it: a missing Ray fails this test

    from advlens.attacks import PGD
    from advlens.models.registry import load_model
    from advlens.pipeline.stages_core import _attack_shard

    model = load_model("fashion-resnet")
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(images).argmax(1)
    shared = {"attack": PGD(model, 8 / 255, 2 / 255, 3, "linf", True, False, 0), "seed": 0, "device": "cpu"}
    parts = shards(40, 16)

    def inputs(part):
        return images[part], labels[part]
    local = list(run_sharded(LocalExecutor(), _attack_shard, shared, parts, tmp_path / "local", "attack", inputs))
    executor = RayExecutor(cpus_per_task=1, num_cpus=2)
    try:
        remote = list(run_sharded(executor, _attack_shard, shared, parts, tmp_path / "ray", "attack", inputs))
    finally:
        ray.shutdown()
    for (part, mine), (other_part, theirs) in zip(local, remote):
        assert part == other_part
        assert np.array_equal(mine["adversarial"], theirs["adversarial"])
    delta = np.concatenate([r["adversarial"] for _, r in local]) - images.numpy()
    assert 0 < np.abs(delta).max() <= 8 / 255 + 1e-6  # a real attack ran (random start: seeded per batch)


@pytest.mark.slow
def test_prepare_on_ray_writes_the_same_store_as_the_local_executor(tmp_path, one_thread):
    import ray  # the dev extra installs it

    from advlens.data import ImageDataset
    from advlens.models.registry import load_model
    from advlens.pipeline import PrepareConfig, prepare

    model = load_model("fashion-resnet")
    images = torch.rand(48, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = model(images).argmax(1)  # every image a true positive, so every one is attacked
    data = ImageDataset(images, labels, model.class_names, "generated", "test")
    stores = {}
    try:
        for executor in ("local", "ray"):
            config = PrepareConfig(dataset="generated", steps=3, batch_size=16, executor=executor)
            stores[executor] = prepare(config, tmp_path / executor, model=model, data=data,
                                       stages=("predict", "attack"))
    finally:
        ray.shutdown()
    local, remote = stores["local"].group("attack"), stores["ray"].group("attack")
    assert int(local.attrs["attacked"]) == 48
    for name in ("adversarial", "adv_pred", "adv_probs", "success", "linf"):
        assert np.array_equal(local[name][:], remote[name][:]), name
