"""Time of the pathways ``sweep`` stage on the demo model over Fashion-MNIST, against plain passes of the same model.

Runs ``prepare --stages sweep`` (predict, then the sweep) into a scratch store (never into stores/full), reads
the stage's time from the manifest and its per-attack times from its attrs, and measures now, in the same
process and on the same images (the stage's sampled true positives):

* one plain batched forward pass without gradients (the ratio the issue asks for: stage / forward);
* one plain forward + input-gradient pass, from which the passes the sweep cannot avoid are estimated:
  PGD needs E·(κ−1)+1 gradient passes (the first is shared by every strength) and E forward passes per
  image, FGSM one gradient pass and E forward passes, and the benign pass one forward per true positive;
* the old path: PGD on the first ``--compare`` sampled images, all strengths, with float32 gradients (the
  sweep before bfloat16) against the stage's own precision, chunk by chunk as the stage runs it.

CPU seconds are the steadier figure on a shared machine; with the default OpenMP wait policy, threads that
wait for a descheduled peer spin and count CPU time, so run it with ``OMP_WAIT_POLICY=PASSIVE`` there (the
policy in effect is printed).

On a GPU (``--device cuda``) the stage runs there (its gradient passes in bfloat16 under ``auto``) and so do the
baselines; ``--dataset FILE.npz`` (images and labels, e.g. the Fashion-MNIST test set written by
``stage_times.py --export``) runs it where the dataset is not installed. The stage's part size is
``--batch-size`` ÷ strengths images (21 at the default 128): a GPU wants larger parts (e.g. ``--batch-size 1536``).

Goal (issue 9): ≤ 6 min on 2 cores for the demo defaults (≤ 300 images per class, 6 strengths, PGD κ = 7
and FGSM). Other processes load a shared machine: the load average is printed with the figures.

Usage::

    python benchmarks/sweep_stage.py                       # the demo defaults over the test set
    python benchmarks/sweep_stage.py --limit 2000 --per-class 30 --keep /tmp/sweep-store
    python benchmarks/sweep_stage.py --per-class 30 --precision float32   # the stage without bfloat16
    python benchmarks/sweep_stage.py --device cuda --dataset fashion-mnist-test.npz --batch-size 1536
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
from advlens.pipeline.stages_pathways import sweep_layers
from advlens.pipeline.sweep import GRADIENT_PRECISIONS, attack_strengths, gradient_model

GOAL_SECONDS = 360.0


def _clock() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def _synchronize(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def forward_seconds(model, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """(wall, CPU) seconds of one no-grad forward pass over ``images`` (each batch moved to the model's device)."""
    _synchronize(model)
    start = _clock()
    with torch.inference_mode():
        for batch in images.split(batch_size):
            model(batch.to(model.device))
    _synchronize(model)
    return _clock() - start


def gradient_seconds(model, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """(wall, CPU) seconds of one plain forward + input-gradient pass (summed cross-entropy) over ``images``."""
    labels = torch.zeros(len(images), dtype=torch.int64)
    _synchronize(model)
    start = _clock()
    for batch, target in zip(images.split(batch_size), labels.split(batch_size)):
        x = batch.to(model.device).clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x), target.to(model.device), reduction="sum")
        torch.autograd.grad(loss, x)
    _synchronize(model)
    return _clock() - start


def pgd_seconds(model, images: torch.Tensor, labels: torch.Tensor, eps: list[float], steps: int, chunk: int,
                precision: str) -> np.ndarray:
    """(wall, CPU) seconds of the stage's PGD over ``images`` (all strengths) with gradients in ``precision``."""
    gradients = gradient_model(model, precision)
    layers = sweep_layers(model)
    start = _clock()
    for first in range(0, len(images), chunk):
        part = slice(first, first + chunk)
        attack_strengths(model, images[part], labels[part], layers, eps, "pgd", steps, gradients=gradients)
    return _clock() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, help="examine only the first N test images (default: all 10,000)")
    parser.add_argument("--per-class", type=int, default=300, help="sweep sample per class")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="fashion-mnist, or a .npz of its test images and labels (where it is not installed)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the stage and the baselines run")
    parser.add_argument("--keep", help="write the scratch store here and keep it (default: a temporary folder)")
    parser.add_argument("--precision", choices=GRADIENT_PRECISIONS, default="auto",
                        help="the number format of the sweep's gradient passes (default: auto)")
    parser.add_argument("--compare", type=int, default=63,
                        help="images on which the old float32 path is timed against the stage's precision")
    args = parser.parse_args(argv)
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sweep-bench-")) / "store"
    load_before = os.getloadavg()
    config = PrepareConfig(dataset=args.dataset, limit=args.limit, batch_size=args.batch_size,
                           sweep_per_class=args.per_class, device=args.device)
    config.sweep_precision = args.precision
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

        data = load_dataset(args.dataset, "test")
        model = load_model("fashion-resnet", class_names=data.class_names, device=args.device)
        images = data.images[torch.from_numpy(sample)]
        forward_seconds(model, images[:256], args.batch_size)  # warm-up
        forward = forward_seconds(model, images, args.batch_size)
        gradient = gradient_seconds(model, images, args.batch_size)
        compared = images[:args.compare], torch.from_numpy(group["sample_label"][:args.compare])
        old = pgd_seconds(model, *compared, attrs["eps"], attrs["steps"], attrs["chunk"], "float32")
        new = pgd_seconds(model, *compared, attrs["eps"], attrs["steps"], attrs["chunk"], attrs["precision"])
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
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"device {args.device} ({device}), batch size {args.batch_size} (parts of {attrs['chunk']} images × "
          f"{strengths} strengths); gradient passes in {attrs['precision']}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"machine: {machine['torch_threads']} torch threads, {machine['cpus']} CPUs; load average "
          f"{load_before[0]:.2f} before, {machine['load_average']:.2f} at the stage's start, {load_after[0]:.2f} after")
    print(f"prepare (predict + sweep): {wall:.1f} s")
    demo = args.limit is None and args.per_class == 300 and args.device == "cpu"
    verdict = ("met" if stage[0] <= GOAL_SECONDS else "NOT met") if demo else "applies to the demo defaults only"
    print(f"sweep stage: {stage[0]:.1f} s wall ({stage[0] / 60:.2f} min; goal ≤ {GOAL_SECONDS / 60:.0f} min: "
          f"{verdict}), {stage[1]:.1f} s CPU "
          f"({stage[1] / machine['torch_threads'] / 60:.2f} min per thread); {len(sample) / stage[0]:.1f} sampled "
          f"images/s, {rows / stage[0]:.1f} (image, strength, attack) rows/s")
    print(f"  benign maxima: {attrs['benign_seconds']:.1f} s wall, {attrs['benign_cpu_seconds']:.1f} s CPU; " + "; ".join(
        f"{name}: {seconds:.1f} s wall, {attrs['attack_cpu_seconds'][name]:.1f} s CPU"
        for name, seconds in attrs["attack_seconds"].items()))
    print(f"baseline, one plain forward pass over the {len(sample)} sampled images: {forward[0]:.2f} s wall, "
          f"{forward[1]:.2f} s CPU ({len(sample) / forward[0]:.0f} images/s); stage / forward = "
          f"{stage[0] / forward[0]:.0f}× wall, {stage[1] / forward[1]:.0f}× CPU")
    print(f"one plain forward + input-gradient pass over them: {gradient[0]:.2f} s wall, {gradient[1]:.2f} s CPU; the "
          f"passes the sweep cannot avoid, done plainly, take ≈ {unavoidable[0]:.1f} s wall, {unavoidable[1]:.1f} s "
          f"CPU: stage / unavoidable = {stage[0] / unavoidable[0]:.2f} wall, {stage[1] / unavoidable[1]:.2f} CPU")
    print(f"old path, PGD over {len(compared[0])} of the images with float32 gradients: {old[0]:.1f} s wall, "
          f"{old[1]:.1f} s CPU; with {attrs['precision']} gradients (the stage's): {new[0]:.1f} s wall, {new[1]:.1f} s "
          f"CPU; old / new = {old[0] / new[0]:.2f} wall, {old[1] / new[1]:.2f} CPU")
    print("success rate per strength (" + " ".join(f"{e * 255:g}/255" for e in attrs["eps"]) + "): " + "; ".join(
        f"{attack}: " + " ".join(f"{success[a, e].mean():.2f}" for e in range(strengths))
        for a, attack in enumerate(attacks)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
