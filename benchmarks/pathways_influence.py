"""Time of the two connection-influence estimators of the pathways system (spec-004 §5) on the demo model.

For ``--n-images`` Fashion-MNIST test images (a seeded sample) and every adjacent pair of the demo model's
9 pathway layers (stem, each block's inner ReLU, each block output), with ``--targets`` drawn target
channels and ``--sources`` drawn source channels (seeded), it times:

* ``grad_x_act_influence`` (any pair): one forward per batch that stops at the target layer, then one
  batched vector-Jacobian product per chunk of targets;
* ``kernel_influence`` where one convolution joins the pair (4 of the 8 pairs), including the capture of
  the source layer's maps it needs;
* a naive gradient × activation in the same run, the baseline: per target, one forward of the whole
  network with both layers tapped and one backward of the sum of that channel's per-image maxima, on
  ``--naive-targets`` targets and scaled to ``--targets`` (its values are compared with the fast path);
* a plain no-grad forward of the whole network over the same images, the unit the ratios are given in.

Each figure is the best of ``--repeats`` runs, wall and process CPU time; other processes load a shared
machine, so the load average is printed with the figures (CPU time is the steadier one).

Usage::

    python benchmarks/pathways_influence.py --n-images 200 --targets 40 --sources 40 --repeats 2
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable

import torch

from advlens.data import load_dataset
from advlens.models import load_model
from advlens.models.adapter import AnalysedModel
from advlens.pathways import default_pathway_layers, grad_x_act_influence, joining_convolution, kernel_influence

logger = logging.getLogger("pathways_influence")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--targets", type=int, default=40, help="drawn target channels per pair")
    parser.add_argument("--sources", type=int, default=40, help="drawn source channels per pair")
    parser.add_argument("--naive-targets", type=int, default=4, help="targets the naive baseline runs (0: skip)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if min(args.n_images, args.targets, args.sources, args.batch_size, args.repeats) < 1 or args.naive_targets < 0:
        parser.error("counts must be ≥ 1 (--naive-targets ≥ 0)")
    return args


def best(run: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Best wall and best CPU seconds of ``repeats`` runs, and the last result."""
    wall_best = cpu_best = float("inf")
    result = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        wall_best = min(wall_best, time.perf_counter() - wall)
        cpu_best = min(cpu_best, time.process_time() - cpu)
    return wall_best, cpu_best, result


def plain_forward(model: AnalysedModel, images: torch.Tensor, batch_size: int) -> None:
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size].to(model.device))


def naive_influence(model: AnalysedModel, images: torch.Tensor, source: str, target: str, targets: list[int],
                    sources: list[int], batch_size: int) -> torch.Tensor:
    """Per target a whole forward with both layers tapped and a backward of the per-image maxima.

    Shape: (N, len(targets), len(sources))."""
    out = torch.empty(len(images), len(targets), len(sources))
    for t, j in enumerate(targets):
        for start in range(0, len(images), batch_size):
            with model.tapping([source, target]) as taps:
                model(images[start:start + batch_size].to(model.device))
            peak = taps[target][:, j].flatten(1).amax(dim=1).sum()
            (grad,) = torch.autograd.grad(peak, taps[source])
            out[start:start + batch_size, t] = (grad * taps[source])[:, sources].sum(dim=(2, 3)).detach().cpu()
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = load_model("fashion-resnet", device=args.device)
    data = load_dataset("fashion-mnist", "test")
    generator = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(len(data.images), generator=generator)[:args.n_images].sort().values
    images = data.images[pick].clone()
    layers = default_pathway_layers(model.graph)
    print(f"== pathways influence, demo model fashion-resnet, {len(images)} Fashion-MNIST test images, device "
          f"{args.device}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} "
          f"(before)")
    print(f"   {args.targets} target × {args.sources} source channels per pair (seeded draw), batch "
          f"{args.batch_size}, best of {args.repeats}")
    base_wall, base_cpu, _ = best(lambda: plain_forward(model, images, args.batch_size), max(3, args.repeats))
    print(f"   plain forward of the whole network: wall {base_wall:.3f} s, cpu {base_cpu:.3f} s  (= 1 forward)")
    header = f"   {'source → target':<26} {'estimator':<16} {'wall s':>8} {'cpu s':>8} {'×forward':>9}  note"
    print(header)
    totals = {"grad_x_act": [0.0, 0.0], "kernel": [0.0, 0.0], "naive (scaled)": [0.0, 0.0]}
    for source, target in zip(layers, layers[1:]):
        c_src, c_tgt = model.graph[source].channels, model.graph[target].channels
        targets = torch.randperm(c_tgt, generator=generator)[:args.targets].sort().values.tolist()
        sources = torch.randperm(c_src, generator=generator)[:args.sources].sort().values.tolist()
        pair = f"{source} → {target}"
        wall, cpu, fast = best(lambda: grad_x_act_influence(model, images, source, target, targets, sources,
                                                            batch_size=args.batch_size), args.repeats)
        totals["grad_x_act"][0] += wall
        totals["grad_x_act"][1] += cpu
        print(f"   {pair:<26} {'grad_x_act':<16} {wall:8.2f} {cpu:8.2f} {cpu / base_cpu:9.1f}")
        conv_name = joining_convolution(model.graph, source, target)
        if conv_name is not None:
            conv = model.net.get_submodule(conv_name)

            c_wall, c_cpu, maps = best(lambda: model.capture(images, [source], batch_size=args.batch_size)[source],
                                       args.repeats)
            maps = maps.to(model.device)
            wall, cpu, _ = best(lambda: kernel_influence(maps, conv, targets=targets, source_channels=sources),
                                args.repeats)
            totals["kernel"][0] += wall + c_wall
            totals["kernel"][1] += cpu + c_cpu
            print(f"   {pair:<26} {'kernel':<16} {wall + c_wall:8.2f} {cpu + c_cpu:8.2f} "
                  f"{(cpu + c_cpu) / base_cpu:9.1f}  via {conv_name}: capture of the source maps {c_cpu:.2f} s cpu, "
                  f"kernel_influence {cpu:.2f} s cpu")
        if args.naive_targets:
            few = targets[:args.naive_targets]
            wall, cpu, slow = best(lambda: naive_influence(model, images, source, target, few, sources,
                                                           args.batch_size), 1)
            scale = len(targets) / len(few)
            totals["naive (scaled)"][0] += wall * scale
            totals["naive (scaled)"][1] += cpu * scale
            diff = float((slow - fast[:, :len(few)]).abs().max())
            print(f"   {pair:<26} {'naive (scaled)':<16} {wall * scale:8.2f} {cpu * scale:8.2f} "
                  f"{cpu * scale / base_cpu:9.1f}  {len(few)} targets ×{scale:g}; max |naive − fast| {diff:.1e}")
    print("   totals over the 8 pairs:")
    for name, (wall, cpu) in totals.items():
        if wall:
            print(f"   {'':<26} {name:<16} {wall:8.2f} {cpu:8.2f} {cpu / base_cpu:9.1f}")
    if totals["naive (scaled)"][1]:
        print(f"   grad_x_act speed-up over the naive loop (cpu): "
              f"×{totals['naive (scaled)'][1] / totals['grad_x_act'][1]:.1f}")
    print(f"   load average {os.getloadavg()[0]:.2f} (after)")


if __name__ == "__main__":
    main()
