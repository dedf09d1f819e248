"""Which neuron ranking finds the neurons that cause the misclassification? (issue 13, item 2)

For N seeded pairs of a store, every available ranking is checked by intervention at its own layer
(:mod:`advlens.analysis.faithfulness`): the top-k channels of the layer are patched, for k on the grid
:func:`advlens.faithfulness.default_ks` (every k up to 20, then 16 geometric steps to all channels), in both
modes — **insertion** (adversarial maps into the benign pass: the adversarial class's probability rising)
and **restoration** (benign maps into the adversarial pass: the benign class's probability recovering).

Per ranking and mode the table gives the AUC (mean share of the attack's effect reached, averaged over k;
:mod:`advlens.faithfulness.auc`) with its 95% CI over pairs (t interval), the mean per-pair difference to the
random baseline with its 95% CI, and the fraction of pairs whose prediction leaves its start class within the
top 1 / 5 / 10 / 20 channels. Baselines at each layer: random orders (``--seeds``; the AUC's mean ± sd over
seeds, each seed's mean over pairs) and ``|activation difference|`` (``max_hw |a_adv − a_benign|``).

Rankings: paper 001's four at the analysed layer (band gap; IoU of the RF with the bMap / aMap — the
vulnerability maps cost one forward per image position, 784 per pair at 28²; direct substitution), paper
002's divergence ranking (``Σ_hw |Δa|``, at the analysed layer, one of the profiles' block-output layers),
Bluff's excitation of the pair's class pair (when the store has the ``sweep`` stage) and AEVis' datapath
gates of the adversarial image (``--datapath-pairs`` of the N pairs: each costs ``--datapath-steps``
forward + backward passes).

Usage::

    python benchmarks/faithfulness.py stores/full                      # 200 pairs, seed 0
    python benchmarks/faithfulness.py STORE --pairs 48 --datapath-pairs 24 --seeds 3

Nothing is written into the store (the rankings are computed in the session only).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch
from scipy import stats

from advlens.analysis import Session
from advlens.analysis.faithfulness import RANKING_SOURCES, Rankings
from advlens.errors import AdvlensError
from advlens.faithfulness import MODES, default_ks, flip_k, patch_auc, patch_curve, random_rankings

logger = logging.getLogger("faithfulness")
FLIP_KS = (1, 5, 10, 20)
BASELINES = ("random", "activation_difference")


def mean_ci(values: np.ndarray) -> tuple[float, float, int]:
    """Mean and half-width of its 95% t interval over the finite values, and their count."""
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return (float(finite.mean()) if len(finite) else float("nan")), float("nan"), len(finite)
    half = stats.t.ppf(0.975, len(finite) - 1) * finite.std(ddof=1) / np.sqrt(len(finite))
    return float(finite.mean()), float(half), len(finite)


def gather_rankings(session: Session, pairs: np.ndarray, datapath_pairs: int, datapath_steps: int,
                    measures: list[str]) -> list[Rankings]:
    """Every available ranking of the pairs (``datapath`` on the first ``datapath_pairs`` only)."""
    found = []
    for measure in measures:
        started = time.perf_counter()
        ids = pairs[:datapath_pairs] if measure == "datapath" else pairs
        if not len(ids):
            continue
        try:
            extra = {"steps": datapath_steps} if measure == "datapath" else {}
            found.append(session.faithfulness_rankings(ids, measure, **extra))
        except AdvlensError as exc:
            logger.warning("%s: not available (%s)", measure, exc)
            continue
        logger.info("%s ranked on %d pairs in %.1f s", measure, len(ids), time.perf_counter() - started)
    return found


def evaluate(session: Session, rankings: Rankings, mode: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """AUC and first flipping k of each valid pair's curve. Shape: two (P,) (NaN / -1 for invalid pairs)."""
    aucs, flips = np.full(len(rankings.pairs), np.nan), np.full(len(rankings.pairs), -1)
    rows = np.flatnonzero(rankings.valid)
    if len(rows):
        benign, adversarial = session.pair_images(rankings.pairs[rows])
        ks = default_ks(session.model.graph[rankings.layer].channels)
        curve = patch_curve(session.model, benign, adversarial, rankings.layer, rankings.orders[rows], mode, ks,
                            batch_size=batch_size)
        aucs[rows], flips[rows] = patch_auc(curve), flip_k(curve)
    return aucs, flips


def random_baseline(session: Session, pairs: np.ndarray, layer: str, seeds: list[int], mode: str,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """AUC and first flipping k per seed and pair. Shape: two (S, P)."""
    channels = session.model.graph[layer].channels
    orders = random_rankings(channels, seeds)  # the same orders for every pair, one per seed
    aucs, flips = [], []
    for order in orders:
        found = Rankings("random", layer, pairs, np.tile(order, (len(pairs), 1)), np.ones(len(pairs), bool))
        auc, flip = evaluate(session, found, mode, batch_size)
        aucs.append(auc), flips.append(flip)
    return np.stack(aucs), np.stack(flips)


def flip_shares(flips: np.ndarray) -> list[float]:
    """Share of pairs (last axis, invalid = -2 left out) flipping within each of :data:`FLIP_KS`."""
    valid = flips > -2
    return [float(((flips >= 1) & (flips <= k) & valid).sum(-1).mean() / max(valid.sum(-1).mean(), 1))
            for k in FLIP_KS]


def table(results: dict, randoms: dict, layer_of: dict, mode: str) -> str:
    """The Markdown table of one mode."""
    lines = [f"**{mode}** (AUC: mean share of the attack's effect on the "
             f"{'adversarial' if mode == 'insertion' else 'benign'} class reached, averaged over k)", "",
             "| ranking | layer | pairs | AUC [95% CI] | AUC − random [95% CI] | flip ≤1 | ≤5 | ≤10 | ≤20 |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for measure, (aucs, flips, pairs) in results.items():
        layer = layer_of[measure]
        random_aucs = randoms[layer][0]  # (S, P_all) over the benchmark's pairs
        per_pair_random = np.nanmean(random_aucs, axis=0)[pairs]
        mean, half, n = mean_ci(aucs)
        diff, diff_half, _ = mean_ci(aucs - per_pair_random)
        shares = flip_shares(np.where(np.isnan(aucs), -2, flips))
        lines.append(f"| {measure} | {layer} | {n} | {mean:.3f} [±{half:.3f}] | {diff:+.3f} [±{diff_half:.3f}] | "
                     + " | ".join(f"{s:.2f}" for s in shares) + " |")
    for layer, (aucs, flips) in randoms.items():
        seed_means = np.nanmean(aucs, axis=1)
        shares = np.mean([flip_shares(row) for row in flips], axis=0)
        lines.append(f"| random ({len(aucs)} seeds, mean ± sd) | {layer} | {aucs.shape[1]} | "
                     f"{seed_means.mean():.3f} ± {seed_means.std(ddof=1) if len(aucs) > 1 else 0:.3f} | — | "
                     + " | ".join(f"{s:.2f}" for s in shares) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store")
    parser.add_argument("--pairs", type=int, default=200, help="pairs sampled (seeded) from the store")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair sample")
    parser.add_argument("--seeds", type=int, default=5, help="random baseline orders")
    parser.add_argument("--datapath-pairs", type=int, default=50, help="pairs (first of the sample) with datapaths")
    parser.add_argument("--datapath-steps", type=int, default=200)
    parser.add_argument("--measures", nargs="*", default=[m for m in RANKING_SOURCES])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    # room for every pair's cached maps, RFs and vulnerability maps: the IoU rankings share them
    session = Session(args.store, device="cpu", cache_size=16 * args.pairs + 128)
    count = min(args.pairs, session.num_pairs)
    pairs = np.sort(np.random.default_rng(args.seed).choice(session.num_pairs, size=count, replace=False))
    print(f"store {args.store}: {session.num_pairs} pairs, {count} sampled (seed {args.seed}); "
          f"load average {os.getloadavg()[0]:.1f}, {torch.get_num_threads()} torch threads")
    found = gather_rankings(session, pairs, args.datapath_pairs, args.datapath_steps, args.measures)
    layer_of = {r.measure: r.layer for r in found}
    seeds = list(range(args.seeds))
    for mode in MODES:
        results, randoms = {}, {}
        index = {int(p): i for i, p in enumerate(pairs)}
        for layer in dict.fromkeys(layer_of.values()):
            t0 = time.perf_counter()
            randoms[layer] = random_baseline(session, pairs, layer, seeds, mode, args.batch_size)
            logger.info("%s random baseline at %s: %.1f s", mode, layer, time.perf_counter() - t0)
        for rankings in found:
            t0 = time.perf_counter()
            aucs, flips = evaluate(session, rankings, mode, args.batch_size)
            results[rankings.measure] = (aucs, flips, np.array([index[int(p)] for p in rankings.pairs]))
            logger.info("%s %s: %.1f s", mode, rankings.measure, time.perf_counter() - t0)
        print()
        print(table(results, randoms, layer_of, mode))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
