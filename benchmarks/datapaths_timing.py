"""Time of one pair's datapaths and of contribution analysis on the demo model, against plain passes.

One successful pair of an analysis store (default ``stores/full``: the demo model on Fashion-MNIST):
its adversarial, its source and ``--targets`` benign true positives of the adversarial class. Timed:
``datapath_chain`` (adv alone, src constrained by adv, the targets as one batch; T = ``--steps``,
the default 9 gate points, label guard included), against the baseline measured in the same run: the
same number of plain forward + backward passes (gradient to the input, no gates) on the same batches,
i.e. the floor any gradient-based extraction pays; and the app's on-demand computation of a pair
(:func:`advlens.analysis.datapaths_pair.compute_pair_datapaths`: the chain plus the predictions with the
gates applied and every map's maximum activation; what ``Session.pair_datapaths`` runs before it writes the
result into the store). Then ``contribution`` (m = 3: adv, src, the
representative target) with a 3×3 AOI for a few (target layer, source layer) cases, ``sgd`` (T = 100)
and ``fast``, against one plain forward of the three images. Best of ``--repeats`` wall times and
process CPU times; the load average is printed (other processes on the machine slow every figure).

Usage::

    python benchmarks/datapaths_timing.py --store stores/full --targets 10 --steps 200 --repeats 3
    python benchmarks/datapaths_timing.py --selection sel.npz --device cuda   # see datapaths_table.py
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datapaths_table import selected  # noqa: E402

from advlens.analysis.datapaths_pair import compute_pair_datapaths  # noqa: E402
from advlens.datapaths import contribution, datapath_chain  # noqa: E402
from advlens.errors import AdvlensError  # noqa: E402

logger = logging.getLogger("datapaths_timing")
CASES = (("layer3", "layer2.relu"), ("layer4", "layer3.relu"), ("layer4.relu", "layer1"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="stores/full")
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--selection", metavar="NPZ", help="an exported selection (datapaths_table.py) instead of "
                                                           "--store: its first adversarial and targets")
    args = parser.parse_args(argv)
    args.adversarials = 1
    if min(args.targets, args.steps, args.repeats, args.threads) < 1:
        parser.error("--targets, --steps, --repeats and --threads must be ≥ 1")
    return args


def best(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall and process-CPU seconds over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def plain_iterations(model, batches: list[torch.Tensor], steps: int) -> None:
    """``steps`` forward + backward passes (gradient to the input) per batch, without gates."""
    for batch in batches:
        for _ in range(steps):
            x = batch.to(model.device).clone().requires_grad_(True)
            torch.autograd.grad(torch.softmax(model(x), 1).sum(), x)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    try:
        model, pair, _, source = selected(args)
    except AdvlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if pair.targets.shape[1] < args.targets:
        print(f"error: the selection has {pair.targets.shape[1]} targets per adversarial, fewer than --targets",
              file=sys.stderr)
        return 2
    adv, src, targets = pair.adversarial[:1], pair.source[:1], pair.targets[0, :args.targets]
    rows = torch.arange(args.targets)
    datapath_chain(model, adv, src, targets, steps=2)  # warm-up: imports, the traced copy
    chain_box: list = []
    chain = best(lambda: chain_box.append(datapath_chain(model, adv, src, targets, steps=args.steps)), args.repeats)
    floor = best(lambda: plain_iterations(model, [adv, src, targets], args.steps), args.repeats)
    on_demand = best(lambda: compute_pair_datapaths(model, 0, adv[0], src[0], targets, rows, rows, steps=args.steps),
                     args.repeats)
    examples = torch.cat([adv, src, targets[int(chain_box[-1].representative()[0])][None]]).to(model.device)
    load = os.getloadavg()
    print(f"## Datapaths timing on {model.spec} ({source}; device {args.device}; {args.threads} thread(s); load "
          f"average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; best of {args.repeats})\n")
    print("| what | wall s | CPU s | baseline wall s | ratio (wall) |")
    print("|---|---|---|---|---|")
    print(f"| chain: adv + src + {args.targets} targets, T = {args.steps}, guard | {chain[0]:.2f} | {chain[1]:.2f} | "
          f"{floor[0]:.2f} (plain fwd+bwd, same batches × T) | {chain[0] / floor[0]:.2f} |")
    print(f"| on demand (Session.pair_datapaths before the store write): chain + gated predictions + map maxima | "
          f"{on_demand[0]:.2f} | {on_demand[1]:.2f} | {floor[0]:.2f} (the same floor) | {on_demand[0] / floor[0]:.2f} |")
    forward = best(lambda: torch.no_grad()(model)(examples), max(args.repeats, 5))
    for target, source in CASES:
        maps, h, w = model.graph[target].shape
        aoi = torch.zeros(h, w, dtype=torch.bool)
        aoi[h // 2 - 1:h // 2 + 2, w // 2 - 1:w // 2 + 2] = True
        target_map = int(model.capture(examples, [target])[target][:, :, aoi].mean(dim=(0, 2)).argmax())
        for method in ("sgd", "fast"):
            t = best(lambda: contribution(model, examples, target, target_map, source, aoi, method=method),
                     args.repeats)
            print(f"| contribution {method}: {target}[{target_map}] ← {source}, 3×3 AOI, m = 3 | {t[0]:.2f} | "
                  f"{t[1]:.2f} | {forward[0]:.4f} (one plain forward, m = 3) | {t[0] / forward[0]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
