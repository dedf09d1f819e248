"""The sweep's gradient passes in bfloat16 against float32 on the demo model: time, and how often the attacked
images' final predictions differ from those of the plain float32 attack.

Draws the sweep stage's seeded per-class sample of benign true positives of the Fashion-MNIST test set (the demo
model's own predictions; ``--per-class`` images per class), then attacks them at the demo strengths three ways:
the plain attack classes :class:`advlens.attacks.PGD` / :class:`advlens.attacks.FGSM` on the model itself (the
reference), and :func:`advlens.pipeline.sweep.attack_strengths` with its gradients in float32 (the sweep's
folded copy of the network: equal up to rounding) and in bfloat16. It prints, per attack and strength, the
success rates and the share of images whose final prediction (always a float32 forward of the model) equals the
reference's, and the (wall, CPU) seconds of both sweeps. Other processes load a shared machine: the load average
is printed with the figures; CPU seconds are the steadier figure (set ``OMP_WAIT_POLICY=PASSIVE`` on a loaded
machine, or OpenMP threads waiting for a descheduled peer spin and count CPU time).

Usage::

    python benchmarks/sweep_precision.py                    # 30 images per class (300)
    python benchmarks/sweep_precision.py --per-class 100 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from advlens.attacks import FGSM, PGD
from advlens.data import load_dataset
from advlens.models import load_model
from advlens.pipeline.stages_pathways import sample_true_positives, sweep_layers
from advlens.pipeline.sweep import (DEFAULT_SWEEP_EPS, SWEEP_ATTACKS, attack_strengths, gradient_model,
                                    native_bfloat16)


def _clock() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def run(model, images: torch.Tensor, labels: torch.Tensor, layers: list[str], attack: str, precision: str,
        chunk: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The stage's attack of ``images`` in chunks, and its (wall, CPU) seconds."""
    gradients = gradient_model(model, precision)
    found: dict[str, list[np.ndarray]] = {}
    started = _clock()
    for start in range(0, len(images), chunk):
        part = slice(start, start + chunk)
        result = attack_strengths(model, images[part], labels[part], layers, DEFAULT_SWEEP_EPS, attack,
                                  gradients=gradients)
        for name in ("pred", "delta"):
            found.setdefault(name, []).append(result[name])
    seconds = _clock() - started
    return {name: np.concatenate(values, axis=1) for name, values in found.items()}, seconds


def reference(model, images: torch.Tensor, labels: torch.Tensor, attack: str, chunk: int) -> np.ndarray:
    """Predictions (E, N) after the plain float32 attack classes, strength by strength."""
    predictions = []
    for eps in DEFAULT_SWEEP_EPS:
        runner = PGD(model, eps, eps / 4, 7) if attack == "pgd" else FGSM(model, eps)
        found = []
        for start in range(0, len(images), chunk * len(DEFAULT_SWEEP_EPS)):
            part = slice(start, start + chunk * len(DEFAULT_SWEEP_EPS))
            adversarial = runner(images[part], labels[part])
            with torch.no_grad():
                found.append(model(adversarial).argmax(1).numpy())
        predictions.append(np.concatenate(found))
    return np.stack(predictions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=30, help="sampled true positives per class")
    parser.add_argument("--chunk", type=int, default=21, help="images per batch (the stage's default: 21)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", "test")
    model = load_model("fashion-resnet", class_names=data.class_names)
    with torch.inference_mode():
        predicted = torch.cat([model(batch).argmax(1) for batch in data.images.split(512)]).numpy()
    labels = data.labels.numpy()
    sample = sample_true_positives(labels, predicted == labels, args.per_class, args.seed, model.num_classes)
    images, targets = data.images[torch.from_numpy(sample)], torch.from_numpy(labels[sample])
    layers = sweep_layers(model)
    load_before = os.getloadavg()[0]
    print(f"{len(sample)} sampled true positives ({args.per_class} per class) × {len(DEFAULT_SWEEP_EPS)} strengths; "
          f"{torch.get_num_threads()} torch threads on {os.cpu_count()} CPUs; native bfloat16: "
          f"{native_bfloat16('cpu')}")
    eps_names = " ".join(f"{e * 255:g}" for e in DEFAULT_SWEEP_EPS)
    for attack in SWEEP_ATTACKS:
        plain = reference(model, images, targets, attack, args.chunk)
        base, base_seconds = run(model, images, targets, layers, attack, "float32", args.chunk)
        fast, fast_seconds = run(model, images, targets, layers, attack, "bfloat16", args.chunk)
        eps = torch.tensor(DEFAULT_SWEEP_EPS).view(-1, 1, 1, 1, 1)
        adversarial = images.unsqueeze(0) + torch.from_numpy(fast["delta"]).float()
        inside = bool((torch.from_numpy(fast["delta"]).float().abs() <= eps + 1e-3).all()
                      and adversarial.min() >= -1e-3 and adversarial.max() <= 1 + 1e-3)  # float16 deltas
        true = labels[sample]
        print(f"{attack}: float32 {base_seconds[0]:.1f} s wall, {base_seconds[1]:.1f} s CPU; bfloat16 "
              f"{fast_seconds[0]:.1f} s wall, {fast_seconds[1]:.1f} s CPU; float32 / bfloat16 = "
              f"{base_seconds[0] / fast_seconds[0]:.2f} wall, {base_seconds[1] / fast_seconds[1]:.2f} CPU")
        print(f"  success at ε = {eps_names} /255: " + "; ".join(
            f"{name} " + " ".join(f"{(pred[e] != true).mean():.3f}" for e in range(len(eps)))
            for name, pred in (("plain", plain), ("float32", base["pred"]), ("bfloat16", fast["pred"]))))
        for name, pred in (("float32", base["pred"]), ("bfloat16", fast["pred"])):
            agree, fooled = pred == plain, (pred != true) == (plain != true)
            print(f"  {name} sweep, same final prediction as the plain attack: "
                  + " ".join(f"{agree[e].mean():.4f}" for e in range(len(eps)))
                  + f"; overall {agree.mean():.4f} ({int((~agree).sum())} of {agree.size} differ; success differs "
                  f"for {int((~fooled).sum())})")
        print(f"  bfloat16 images in the ε-ball and [0, 1]: {inside}")
    print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
