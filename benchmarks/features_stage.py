"""Time and acceptance of a store's ``features`` stage, per layer, read from the store itself.

The stage records, per layer, the wall and CPU seconds of its feature visualisations, the time of
the one data pass (dataset examples and statistics of all layers), the machine (torch threads, CPUs,
1-minute load average when it started) and the manifest the whole stage's time. Acceptance is
recomputed here from the stored arrays: a channel is accepted when its spatial-mean activation on
its own visualisation (``L…_vis_activation``) exceeds the 95th percentile of its spatial-mean
activations over the examined images (``L…_mean_quantiles``).

Baseline (``--baseline``, measured now, on this machine and its current load): per layer, plain
full-model forward + input-gradient passes on as many noise images as the layer has channels, for
the stage's number of steps (scaled from a few), and a plain no-grad forward pass over the examined
images; the ratios say what the stage costs over the passes it cannot avoid.

Usage::

    python benchmarks/features_stage.py stores/full [--baseline]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from advlens.analysis.features import FeatureLibrary
from advlens.errors import AdvlensError
from advlens.store import open_store

GOAL_SECONDS = 180.0


def fv_baseline(model, channels: int, steps: int, sample: int = 3) -> float:
    """Wall seconds of ``steps`` plain forward + input-gradient passes on ``channels`` noise images."""
    x = torch.rand(channels, *model.input_shape, generator=torch.Generator().manual_seed(0)).requires_grad_()
    model(x[:2]).sum().backward(inputs=[x])  # warm-up
    start = time.perf_counter()
    for _ in range(sample):
        model(x).sum().backward(inputs=[x])
    return (time.perf_counter() - start) / sample * steps


def forward_baseline(model, images: torch.Tensor, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for batch in images.split(batch_size):
            model(batch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="an analysis store with the features stage")
    parser.add_argument("--baseline", action="store_true", help="also time plain forward(+backward) passes now")
    args = parser.parse_args(argv)
    try:
        store = open_store(args.store)
        library = FeatureLibrary(store)
    except AdvlensError as exc:
        parser.exit(2, f"features_stage: {exc}\n")
    attrs = library.attrs
    record = store.manifest["stages"]["features"]
    layers, channels = library.layers(), attrs["channels"]
    machine = attrs.get("machine", {})
    print(f"store {store.root}: {len(layers)} layers, {sum(channels)} channels; {attrs['images']} examined images; "
          f"{attrs['steps']} steps, Adam lr {attrs['lr']}, top-{attrs['k']} examples")
    if machine:
        print(f"stage ran with {machine['torch_threads']} torch threads on {machine['cpus']} CPUs, load average "
              f"{machine['load_average']} at its start")
    model = baseline_forward = None
    if args.baseline:
        from advlens.analysis import SessionCore
        from advlens.data import load_dataset

        model = SessionCore(store).model
        data = store.config["dataset"]
        images = load_dataset(data["name"], data["split"]).images[: attrs["images"]]
        baseline_forward = forward_baseline(model, images, attrs["batch_size"])

    level = library.quantile_levels.index(attrs["acceptance_level"])
    header = f"{'layer':<14} {'ch':>4} {'vis s':>7} {'cpu s':>7} {'accepted':>8} {'median act/p95':>14}"
    print("\n" + header + (f" {'base s':>7} {'ratio':>6}" if model is not None else ""))
    accepted_total, base_total = 0, 0.0
    for i, layer in enumerate(layers):
        stats = [library.channel_stats(layer, c) for c in range(channels[i])]
        reached = np.array([s.vis_activation for s in stats])
        p95 = np.array([s.mean_quantiles[level] for s in stats])
        accepted = int(sum(s.accepted for s in stats))
        accepted_total += accepted
        ratio = np.median(reached / np.maximum(p95, 1e-12))
        cpu = attrs.get("cpu_seconds", [float("nan")] * len(layers))[i]
        line = (f"{layer:<14} {channels[i]:>4} {attrs['seconds'][i]:>7.1f} {cpu:>7.1f} "
                f"{accepted / channels[i]:>8.1%} {ratio:>14.2f}")
        if model is not None:
            base = fv_baseline(model, channels[i], attrs["steps"])
            base_total += base
            line += f" {base:>7.1f} {attrs['seconds'][i] / base:>6.2f}"
        print(line)
    vis_total = sum(attrs["seconds"])
    print(f"{'all':<14} {sum(channels):>4} {vis_total:>7.1f} {sum(attrs.get('cpu_seconds', [np.nan])):>7.1f} "
          f"{accepted_total / sum(channels):>8.1%}" + (f" {'':>14} {base_total:>7.1f} {vis_total / base_total:>6.2f}"
                                                     if model is not None else ""))
    print(f"\ndata pass (examples + statistics of all layers): {attrs['examples_seconds']:.1f} s"
          + (f" (cpu {attrs['examples_cpu_seconds']:.1f} s)" if "examples_cpu_seconds" in attrs else "")
          + (f"; plain no-grad forward over the same images now: {baseline_forward:.1f} s "
             f"(×{attrs['examples_seconds'] / baseline_forward:.2f})" if baseline_forward else ""))
    total = record["seconds"]
    print(f"stage time (manifest): {total:.1f} s (goal ≤ {GOAL_SECONDS:.0f} s on 2 cores: "
          f"{'met' if total <= GOAL_SECONDS else 'MISSED'}); acceptance {accepted_total / sum(channels):.1%} "
          f"(goal ≥ 80%: {'met' if accepted_total >= 0.8 * sum(channels) else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
