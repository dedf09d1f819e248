"""Feature visualisation and dataset examples for every channel of the demo model's default layers.

Runs :func:`advlens.features.feature_visualization` on all channels of each layer of
``model.graph.activation_layers()`` (the demo model: stem, each block's inner ReLU and each block
output, 9 layers, 992 channels; one call per layer, all its channels in one batch) and
:func:`advlens.features.dataset_examples_for_layers` (top-k over the whole Fashion-MNIST test set,
10,000 images, all layers in one streaming pass). Prints per layer the time and the acceptance rate
(spec-002 A15 / issue 8: the channel's spatial-mean activation on its image exceeds the 95th
percentile of its spatial-mean activations over 1,000 test images; also: exceeds its value on the
initial noise), and the total against the goal of 3 minutes on 2 cores.

Baselines measured in the same run, on the same machine and load:
* feature visualisation: plain forward + input-gradient passes of the *whole* model on a batch of as
  many noise images as the layer has channels, timed for a few steps right after that layer (so under
  the same load) and scaled to the layer's steps;
* dataset examples: a plain no-grad forward pass of the whole model over the same images.
The machine load (``os.getloadavg``) and the share of the cores this process got (CPU time / wall
time) are printed, since other processes may share the cores.

Usage::

    python benchmarks/features.py --steps 32 --lr 0.1 --k 10 --images 10000 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch

import advlens
from advlens.errors import AdvlensError
from advlens.features import dataset_examples_for_layers, feature_visualization
from advlens.features.visualization import channel_generator

logger = logging.getLogger("features_benchmark")
GOAL_SECONDS = 180.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=32, help="feature-visualisation steps")
    parser.add_argument("--lr", type=float, default=0.1, help="feature-visualisation Adam learning rate")
    parser.add_argument("--k", type=int, default=10, help="dataset examples per channel")
    parser.add_argument("--images", type=int, default=10_000, help="test images read for dataset examples")
    parser.add_argument("--background", type=int, default=1000, help="test images for the 95th percentile")
    parser.add_argument("--batch-size", type=int, default=500, help="images per forward pass (examples)")
    parser.add_argument("--layers", nargs="*", default=None, help="default: model.graph.activation_layers()")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.steps, args.k, args.images, args.background, args.batch_size) < 1:
        parser.error("--steps, --k, --images, --background and --batch-size must be ≥ 1")
    return args


class Clock:
    """Wall and process CPU time of a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def fv_baseline(model: advlens.AnalysedModel, batch: int, steps: int, sample: int = 4) -> tuple[float, float]:
    """Wall and CPU seconds of ``steps`` plain full-model forward + input-gradient passes on ``batch`` images,
    scaled from ``sample`` steps."""
    x = torch.rand(batch, *model.input_shape, generator=torch.Generator().manual_seed(0)).requires_grad_()
    with Clock() as clock:
        for _ in range(sample):
            model(x).sum().backward(inputs=[x])
    return clock.wall / sample * steps, clock.cpu / sample * steps


def forward_baseline(model: advlens.AnalysedModel, images: torch.Tensor, batch_size: int) -> Clock:
    """Wall and CPU time of a plain no-grad forward pass of the whole model over ``images``."""
    with Clock() as clock, torch.no_grad():
        for batch in images.split(batch_size):
            model(batch)
    return clock


def initial_noise(model: advlens.AnalysedModel, channels: list[int], seed: int) -> torch.Tensor:
    """The pixel parameterisation's starting images (the first draw of each channel's generator)."""
    _, height, width = model.input_shape
    return torch.stack([torch.rand(model.input_shape[0], height, width, generator=channel_generator(seed, c))
                        for c in channels])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = advlens.load_model("fashion-resnet")
        data = advlens.load_dataset("fashion-mnist", split="test")
    except AdvlensError as exc:
        logger.error("%s", exc)
        return 2
    layers = args.layers or model.graph.activation_layers()
    channels = {layer: model.graph[layer].channels for layer in layers}
    images = data.images[: args.images]
    background = data.images[: args.background]
    total_channels = sum(channels.values())
    load_before = os.getloadavg()
    print(f"demo model, {len(layers)} layers, {total_channels} channels; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f}")

    p95 = {layer: values.quantile(0.95, dim=0)
           for layer, values in model.capture(background, layers, reduce="mean", batch_size=500).items()}
    rows = []
    for layer in layers:
        picked = list(range(channels[layer]))
        with Clock() as clock:
            generated = feature_visualization(model, layer, picked, steps=args.steps, seed=args.seed, lr=args.lr)
        reached = model.capture(generated, [layer], reduce="mean")[layer][torch.arange(len(picked)), picked]
        noise = model.capture(initial_noise(model, picked, args.seed), [layer], reduce="mean")[layer]
        noise = noise[torch.arange(len(picked)), picked]
        ratio = (reached / p95[layer].clamp(min=1e-12)).numpy()
        baseline = fv_baseline(model, len(picked), args.steps)
        rows.append((layer, len(picked), clock.wall, clock.cpu, float((reached > p95[layer]).float().mean()),
                     float((reached > noise).float().mean()),
                     float(((reached > p95[layer]) & (reached > noise)).float().mean()), np.median(ratio),
                     baseline))
        logger.info("%s: %d channels in %.1f s", layer, len(picked), clock.wall)

    with Clock() as examples_clock:
        examples = dataset_examples_for_layers(model, layers, images, k=args.k, batch_size=args.batch_size)
    baseline_forward = forward_baseline(model, images, args.batch_size)
    load_after = os.getloadavg()

    print(f"\nfeature visualisation: {args.steps} steps, Adam lr {args.lr}, seed {args.seed}; acceptance: activation "
          f"> 95th percentile over {len(background)} test images (and > on the initial noise)")
    print(f"{'layer':<12} {'ch':>4} {'time s':>7} {'cpu s':>7} {'> p95':>6} {'> noise':>7} {'both':>6} "
          f"{'median act/p95':>14} {'base s':>7} {'base cpu':>8} {'ratio':>6} {'cpu ratio':>9}")
    for layer, count, wall, cpu, above, above_noise, both, median, (base, base_cpu) in rows:
        print(f"{layer:<12} {count:>4} {wall:>7.1f} {cpu:>7.1f} {above:>6.1%} {above_noise:>7.1%} {both:>6.1%} "
              f"{median:>14.2f} {base:>7.1f} {base_cpu:>8.1f} {wall / base:>6.2f} {cpu / base_cpu:>9.2f}")
    weights = np.array([count for _, count, *_ in rows])
    overall = float(np.dot([r[4] for r in rows], weights) / weights.sum())
    overall_both = float(np.dot([r[6] for r in rows], weights) / weights.sum())
    baseline_fv, baseline_fv_cpu = sum(row[-1][0] for row in rows), sum(row[-1][1] for row in rows)
    fv_wall, fv_cpu = sum(row[2] for row in rows), sum(row[3] for row in rows)
    print(f"{'all':<12} {total_channels:>4} {fv_wall:>7.1f} {fv_cpu:>7.1f} {overall:>6.1%} {'':>7} "
          f"{overall_both:>6.1%} {'':>14} {baseline_fv:>7.1f} {baseline_fv_cpu:>8.1f} {fv_wall / baseline_fv:>6.2f} "
          f"{fv_cpu / baseline_fv_cpu:>9.2f}")
    shapes = ", ".join(f"{layer} {tuple(e.patches.shape[-2:])}" for layer, e in examples.items())
    print(f"\ndataset examples: top-{args.k} of {len(images)} images, {len(layers)} layers in one pass: "
          f"{examples_clock.wall:.1f} s (cpu {examples_clock.cpu:.1f} s); patch sizes: {shapes}")
    total = fv_wall + examples_clock.wall
    print("\nbaselines (same run):")
    print(f"  feature visualisation vs plain full-model forward+input-backward of {total_channels}×{args.steps} "
          f"image-steps ({baseline_fv:.1f} s, cpu {baseline_fv_cpu:.1f} s): ×{fv_wall / baseline_fv:.2f} "
          f"(cpu ×{fv_cpu / baseline_fv_cpu:.2f})")
    print(f"  dataset examples vs plain no-grad forward of {len(images)} images ({baseline_forward.wall:.1f} s, "
          f"cpu {baseline_forward.cpu:.1f} s): ×{examples_clock.wall / baseline_forward.wall:.2f} "
          f"(cpu ×{examples_clock.cpu / baseline_forward.cpu:.2f})")
    cpu = fv_cpu + examples_clock.cpu
    print(f"\ntotal {total:.1f} s wall, {cpu:.1f} s CPU (goal ≤ {GOAL_SECONDS:.0f} s on 2 cores: "
          f"{'met' if total <= GOAL_SECONDS else 'MISSED'} in wall time); acceptance {overall:.1%} (goal ≥ 80%: "
          f"{'met' if overall >= 0.8 else 'MISSED'})")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); this process got "
          f"{cpu / total:.2f} CPU-seconds per second of the {os.cpu_count()} CPUs (other processes share them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
