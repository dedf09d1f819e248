"""Paper 004 §4's findings on a store's strength sweep: does "death by a thousand cuts" hold on this model?

For the most attacked class pairs (original → target) of the sweep, per pathway layer, with Bluff's
setting of 30% of the neurons per layer (paper 004 §4.2):

* attack-only neurons at a weak and at a strong ε: the top 30% of the layer by importance on the attacked
  images (median over the images of their spatial maxima) that are in neither the original's nor the
  target's top 30% — Bluff's count (28 vs 9, 42 vs 16, 29 vs 8 over three pairs, weak vs strong);
* excited / inhibited neurons at a chosen ε: importance on the attacked images above / below that on the
  benign original images (spec-004 §4), among all channels of the layer.

Usage: ``python benchmarks/pathways_findings.py STORE [--pairs 5] [--attack pgd] [--weak 2] [--strong 32]
[--at 8] [--fraction 0.3]`` (strengths in /255). A set of fewer than 5 attacked images is marked.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from advlens.analysis.pathways_sweep import SweepView  # noqa: E402
from advlens.pathways import excitation, neuron_importance  # noqa: E402
from advlens.store import open_store  # noqa: E402


def top(importance: np.ndarray, count: int) -> set[int]:
    """The ``count`` most important channels (ties: lower channel first)."""
    order = np.lexsort((np.arange(len(importance)), -importance))
    return set(order[:count].tolist())


def strength_index(sweep: SweepView, eps_255: float) -> int:
    found = np.flatnonzero(np.isclose(sweep.eps * 255, eps_255))
    if not found.size:
        raise SystemExit(f"ε = {eps_255}/255 is not among the sweep's strengths {list(np.round(sweep.eps * 255, 3))}")
    return int(found[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--attack", default="pgd")
    parser.add_argument("--weak", type=float, default=2.0, help="weak ε in /255")
    parser.add_argument("--strong", type=float, default=32.0, help="strong ε in /255")
    parser.add_argument("--at", type=float, default=8.0, help="ε (/255) of the excited/inhibited counts")
    parser.add_argument("--fraction", type=float, default=0.3, help="share of each layer's neurons (Bluff: 30%%)")
    args = parser.parse_args()

    store = open_store(args.store)
    sweep = SweepView(store)
    names = store.class_names
    attack = sweep.attack_index(args.attack)
    weak, strong, at = (strength_index(sweep, e) for e in (args.weak, args.strong, args.at))
    # the most attacked class pairs, counted over every strength of the attack
    predictions = sweep.adv_pred[attack]  # (E, S)
    counts: dict[tuple[int, int], int] = {}
    for row in predictions:
        for original, target in zip(sweep.sample_label.tolist(), row.tolist()):
            if original != target:
                counts[(original, target)] = counts.get((original, target), 0) + 1
    chosen = sorted(counts, key=lambda pair: (-counts[pair], pair))[:args.pairs]

    print(f"store {args.store}: {args.attack}, sweep ε = {', '.join(f'{e * 255:g}' for e in sweep.eps)} (/255), "
          f"{len(sweep.sample_index)} sampled images, top {args.fraction:.0%} of each layer's neurons\n")
    print(f"| class pair | attacked images (ε {args.weak:g} / {args.strong:g}) | attack-only at ε {args.weak:g}/255 | "
          f"attack-only at ε {args.strong:g}/255 | weak > strong |")
    print("| --- | --- | --- | --- | --- |")
    per_layer_rows = []
    for original, target in chosen:
        attacked = sweep.attacked_rows(original, target)[attack]  # (E, S)
        sample_rows = {e: np.flatnonzero(attacked[e]) for e in (weak, strong, at)}
        benign_o, benign_t = sweep.benign_rows(original), sweep.benign_rows(target)
        only = {weak: 0, strong: 0}
        excited_layers, inhibited_layers = [], []
        for layer in range(len(sweep.layers)):
            channels = int(sweep.channels[layer])
            count = max(1, math.ceil(args.fraction * channels))
            imp_o = neuron_importance(sweep.benign_max(layer, benign_o))
            imp_t = neuron_importance(sweep.benign_max(layer, benign_t))
            benign_top = top(imp_o, count) | top(imp_t, count)
            for e in (weak, strong):
                rows = sample_rows[e]
                if len(rows):
                    imp_a = neuron_importance(sweep.adv_max(layer, rows)[attack, e])
                    only[e] += len(top(imp_a, count) - benign_top)
            rows = sample_rows[at]
            if len(rows):
                change = excitation(neuron_importance(sweep.adv_max(layer, rows)[attack, at]), imp_o)
                excited_layers.append(int((change > 0).sum()))
                inhibited_layers.append(int((change < 0).sum()))
            else:
                excited_layers.append(0)
                inhibited_layers.append(0)
        sizes = [len(sample_rows[weak]), len(sample_rows[strong])]
        flag = " (too few)" if min(sizes) < 5 else ""
        pair = f"{names[original]} → {names[target]}"
        print(f"| {pair} | {sizes[0]} / {sizes[1]}{flag} | {only[weak]} | {only[strong]} | "
              f"{'yes' if only[weak] > only[strong] else 'no'} |")
        per_layer_rows.append((pair, len(sample_rows[at]), excited_layers, inhibited_layers))

    print(f"\nExcited / inhibited neurons per layer at ε {args.at:g}/255 (attacked importance above / below the benign "
          "original's; all channels of the layer):\n")
    print("| class pair | images | " + " | ".join(sweep.layers) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in sweep.layers) + " |")
    for pair, images, excited_layers, inhibited_layers in per_layer_rows:
        cells = [f"{e} / {i}" for e, i in zip(excited_layers, inhibited_layers)]
        print(f"| {pair} | {images} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
