"""Per-stage wall time of prepare's sharded stages, local executor vs Ray, on a small Fashion-MNIST store; and the
CPU seconds per image of EfficientNet-Lite0 (224²) in the attack, activations and sweep stages' work units.

Run: python benchmarks/ray_stages.py [--limit 200] [--photos 2]
Prints figures; a correctness run on a busy 2-core machine, not a speed-up claim.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from advlens.data import load_dataset
from advlens.models.registry import load_model
from advlens.pipeline import PrepareConfig, prepare

STAGES = ("predict", "attack", "activations", "sweep")


def small_store(limit: int) -> None:
    import ray

    model = load_model("fashion-resnet")
    data = load_dataset("fashion-mnist", "test", "/usr/share/datasets/fashion-mnist")
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray start: {time.perf_counter() - started:.1f} s (not counted below)")
    root = Path(tempfile.mkdtemp())
    times = {}
    try:
        for executor in ("local", "ray"):
            times[executor] = {}
            for stage in STAGES:
                config = PrepareConfig(dataset="fashion-mnist", limit=limit, executor=executor, seed=0)
                began = time.perf_counter()
                prepare(config, root / executor, model=model, data=data, stages=[stage])
                times[executor][stage] = time.perf_counter() - began
            print(executor, {k: round(v, 1) for k, v in times[executor].items()}, "load", os.getloadavg())
    finally:
        ray.shutdown()
        shutil.rmtree(root)
    for stage in STAGES:
        print(f"{stage:12s} local {times['local'][stage]:7.1f} s   ray {times['ray'][stage]:7.1f} s   "
              f"ray/local {times['ray'][stage] / times['local'][stage]:.2f}")


def cpu(fn) -> float:
    began = time.process_time()
    fn()
    return time.process_time() - began


def efficientnet(photos: int) -> None:
    from advlens.attacks import PGD
    from advlens.pipeline.stages_pathways import sweep_layers
    from advlens.pipeline.sweep import (DEFAULT_SWEEP_EPS, attack_strengths, benign_maxima, gradient_models,
                                        resolve_precision)

    torch.set_num_threads(1)  # CPU seconds of one Ray task of one CPU
    model = load_model("efficientnet-lite0")
    images = load_dataset("photos").images[:photos]
    with torch.no_grad():
        labels = model(images).argmax(1)
    n = len(images)
    layers = sweep_layers(model)
    print(f"efficientnet-lite0, {n} photos at 224², 1 torch thread, sweep layers {len(layers)}, "
          f"precision auto → {resolve_precision('auto', 'cpu')}")
    with torch.no_grad():
        model.activations(images[:1])  # warm-up
    act = cpu(lambda: [model.activations(images) for _ in range(2)]) / 2  # benign + adversarial side
    print(f"activations (benign + adversarial side): {act / n:.2f} CPU s per pair")
    pgd = PGD(model, 8 / 255, 2 / 255, 7, "linf", True, False, 0)
    print(f"attack (PGD-7): {cpu(lambda: pgd(images, labels)) / n:.2f} CPU s per image")
    print(f"sweep benign maxima: {cpu(lambda: benign_maxima(model, images, layers, 64)) / n:.2f} CPU s per image")
    for precision in ("float32", "bfloat16"):
        for attack in ("pgd", "fgsm"):
            gradients = gradient_models(model, [attack], precision)[attack]
            seconds = cpu(lambda: attack_strengths(model, images, labels, layers, DEFAULT_SWEEP_EPS, attack,
                                                   gradients=gradients))
            print(f"sweep {attack} ({precision}, {len(DEFAULT_SWEEP_EPS)} strengths, 7 steps): "
                  f"{seconds / n:.2f} CPU s per image")
    print("load", os.getloadavg())


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--photos", type=int, default=2)
    parser.add_argument("--part", choices=("store", "efficientnet", "both"), default="both")
    args = parser.parse_args()
    if args.part in ("store", "both"):
        small_store(args.limit)
    if args.part in ("efficientnet", "both"):
        efficientnet(args.photos)
