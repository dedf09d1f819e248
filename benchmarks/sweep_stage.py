"""Time of the pathways ``sweep`` stage on the demo model over Fashion-MNIST, against plain passes of the same model.

Runs ``prepare --stages sweep`` (predict, then the sweep) into a scratch store (never into stores/full), reads
the stage's time from the manifest and its per-attack times from its attrs, and measures now, in the same
process and on the same images (the stage's sampled true positives):

* one plain batched forward pass without gradients (the ratio the issue asks for: stage / forward);
* one plain forward + input-gradient pass, from which the passes the sweep cannot avoid are estimated:
  PGD needs E·(κ−1)+1 gradient passes (the first is shared by every strength) and E forward passes per
  image, FGSM one gradient pass and E forward passes, and the benign pass one forward per true positive.

Goal (issue 9): ≤ 6 min on 2 cores for the demo defaults (≤ 300 images per class, 6 strengths, PGD κ = 7
and FGSM). Other processes load a shared machine: the load average is printed with the figures.

Usage::

    python benchmarks/sweep_stage.py                       # the demo defaults over the test set
    python benchmarks/sweep_stage.py --limit 2000 --per-class 30 --keep /tmp/sweep-store
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from advlens.pipeline import PrepareConfig, prepare

GOAL_SECONDS = 360.0


def _clock() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def forward_seconds(model, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """(wall, CPU) seconds of one no-grad forward pass over ``images``."""
    start = _clock()
    with torch.inference_mode():
        for batch in images.split(batch_size):
            model(batch)
    return _clock() - start


def gradient_seconds(model, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """(wall, CPU) seconds of one plain forward + input-gradient pass (summed cross-entropy) over ``images``."""
    labels = torch.zeros(len(images), dtype=torch.int64)
    start = _clock()
    for batch, target in zip(images.split(batch_size), labels.split(batch_size)):
        x = batch.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x), target, reduction="sum")
        torch.autograd.grad(loss, x)
    return _clock() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="examine only the first N test images (default: all 10,000)")
    parser.add_argument("--per-class", type=int, default=300, help="sweep sample per class")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--keep", help="write the scratch store here and keep it (default: a temporary folder)")
    args = parser.parse_args(argv)
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sweep-bench-")) / "store"
    load_before = os.getloadavg()
    config = PrepareConfig(limit=args.limit, batch_size=args.batch_size, sweep_per_class=args.per_class)
    try:
        started = time.perf_counter()
        store = prepare(config, scratch, stages=["sweep"])
        wall = time.perf_counter() - started
        record = store.manifest["stages"]["sweep"]
        group = store.group("sweep")
        attrs = group.attrs
        sample = group["sample_index"][...]
        success = group["adv_pred"][...] != group["sample_label"][...]  # (A, E, S)
        from advlens.data import load_dataset
        from advlens.models import load_model

        data = load_dataset("fashion-mnist", "test")
        model = load_model("fashion-resnet", class_names=data.class_names)
        images = data.images[torch.from_numpy(sample)]
        forward_seconds(model, images[:256], args.batch_size)  # warm-up
        forward = forward_seconds(model, images, args.batch_size)
        gradient = gradient_seconds(model, images, args.batch_size)
    finally:
        if not args.keep:
            shutil.rmtree(scratch.parent, ignore_errors=True)
    load_after = os.getloadavg()
    stage = np.array([float(record["seconds"]), float(attrs["cpu_seconds"])])
    strengths, steps, attacks = len(attrs["eps"]), attrs["steps"], attrs["attacks"]
    rows = len(sample) * strengths * len(attacks)
    benign = attrs["benign_count"]
    unavoidable = forward * benign / max(len(sample), 1)
    for attack in attacks:
        grads = strengths * (steps - 1) + 1 if attack == "pgd" else 1
        unavoidable = unavoidable + grads * gradient + strengths * forward
    machine = attrs["machine"]
    print(f"sweep over {len(sample)} sampled true positives ({attrs['per_class']} per class at most; "
          f"{benign} benign true positives) × {strengths} strengths × {'/'.join(attacks)}, κ = {steps}, "
          f"{len(attrs['layers'])} layers, {sum(attrs['channels'])} channels")
    print(f"machine: {machine['torch_threads']} torch threads, {machine['cpus']} CPUs; load average "
          f"{load_before[0]:.2f} before, {machine['load_average']:.2f} at the stage's start, {load_after[0]:.2f} after")
    print(f"prepare (predict + sweep): {wall:.1f} s")
    print(f"sweep stage: {stage[0]:.1f} s wall ({stage[0] / 60:.2f} min; goal ≤ {GOAL_SECONDS / 60:.0f} min: "
          f"{'met' if stage[0] <= GOAL_SECONDS else 'NOT met'}), {stage[1]:.1f} s CPU "
          f"({stage[1] / machine['torch_threads'] / 60:.2f} min per thread); {len(sample) / stage[0]:.1f} sampled "
          f"images/s, {rows / stage[0]:.1f} (image, strength, attack) rows/s")
    print(f"  benign maxima: {attrs['benign_seconds']:.1f} s; " + "; ".join(
        f"{name}: {seconds:.1f} s wall, {attrs['attack_cpu_seconds'][name]:.1f} s CPU"
        for name, seconds in attrs["attack_seconds"].items()))
    print(f"baseline, one plain forward pass over the {len(sample)} sampled images: {forward[0]:.2f} s wall, "
          f"{forward[1]:.2f} s CPU ({len(sample) / forward[0]:.0f} images/s); stage / forward = "
          f"{stage[0] / forward[0]:.0f}× wall, {stage[1] / forward[1]:.0f}× CPU")
    print(f"one plain forward + input-gradient pass over them: {gradient[0]:.2f} s wall, {gradient[1]:.2f} s CPU; the "
          f"passes the sweep cannot avoid, done plainly, take ≈ {unavoidable[0]:.1f} s wall, {unavoidable[1]:.1f} s "
          f"CPU: stage / unavoidable = {stage[0] / unavoidable[0]:.2f} wall, {stage[1] / unavoidable[1]:.2f} CPU")
    print("success rate per strength (" + " ".join(f"{e * 255:g}/255" for e in attrs["eps"]) + "): " + "; ".join(
        f"{attack}: " + " ".join(f"{success[a, e].mean():.2f}" for e in range(strengths))
        for a, attack in enumerate(attacks)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
