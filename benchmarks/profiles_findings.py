"""Paper 002's findings F1–F3 and F8 on a store with the ``profiles`` stage (spec-002 §3.3, §6 A11, A12, A17).

* F1 — classes condense with depth: per profile axis, how well the background's 1-D positions separate the
  classes (leave-one-out 15-NN accuracy and silhouette by true label; the number of classes whose
  fingerprint peak is brighter than on the first axis).
* F2/F3 — a diverging point after which the adversarial joins its predicted class: over a seeded sample of
  the store's pairs (both images placed on the stored axes), how many have a diverging point
  (:func:`advlens.profiles.diverging_point`, τ = 1 IQR), between which axes, and for how many the
  adversarial's nearest class by median position (background coloured by predicted class) is its
  predicted class on every axis from the divergence on; one clear example pair. The store's attack may be
  milder than the paper's; ``--eps E`` attacks the sampled pairs' benign images again with untargeted L∞ PGD
  (α = ε/4, ``--steps`` iterations, spec-002's "mild" preset is ε = 0.1, 100 steps) and uses the successful
  ones instead.
* F8 — 1,000 vs 2,000 background images: a fit on a seeded half of the stored background (same settings)
  against the stored fit: per-axis silhouettes (A17: within 0.1) and how often a pair's diverging point
  is the same. ``--refit`` adds a second fit of the full background with another seed, the yardstick of
  how much any refit moves these figures (refits are not reproducible, spec-002 §5).

Usage::

    python benchmarks/profiles_findings.py STORE [--pairs 500] [--seed 0] [--refit] [--eps 0.1 --steps 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch
from sklearn.metrics import silhouette_score

from advlens.analysis import Session
from advlens.attacks import PGD
from advlens.pipeline.stages_profiles import FIT_PARAMS, fit_background, flattened_activations
from advlens.profiles import ActivationProfiles, diverging_point, fingerprints, histograms, nearest_class_by_median

NEIGHBOURS = 15


def knn_accuracy(positions: np.ndarray, labels: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Leave-one-out k-NN accuracy of 1-D positions (majority of the k nearest others, ties: smaller label)."""
    keep = np.isfinite(positions)
    x, y = positions[keep], labels[keep]
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    hits = 0
    classes = int(y.max()) + 1
    for i in range(len(x)):  # the k nearest lie within k places either side in sorted order
        lo, hi = max(0, i - k), min(len(x), i + k + 1)
        window = np.r_[lo:i, i + 1:hi]
        nearest = window[np.argsort(np.abs(x[window] - x[i]), kind="stable")[:k]]
        hits += int(np.argmax(np.bincount(y[nearest], minlength=classes)) == y[i])
    return hits / len(x)


def separation(embeddings: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per axis: 15-NN accuracy and silhouette of the 1-D positions by label. Shape: embeddings (n, L)."""
    accuracy, silhouette = [], []
    for column in embeddings.T:
        keep = np.isfinite(column)
        accuracy.append(knn_accuracy(column, labels))
        silhouette.append(float(silhouette_score(column[keep, None], labels[keep])))
    return accuracy, silhouette


def pair_profiles(profiles: ActivationProfiles, model, layers: list[str], benign: np.ndarray,
                  adversarial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images of each pair placed on the fitted axes. Shape: (m, L) each."""
    images = torch.from_numpy(np.concatenate([benign, adversarial]))
    placed = profiles.transform(flattened_activations(model, images, layers))
    return placed[:len(benign)], placed[len(benign):]


def divergences(benign: np.ndarray, adversarial: np.ndarray, background: np.ndarray,
                adv_pred: np.ndarray, background_pred: np.ndarray) -> tuple[list, np.ndarray]:
    """Each pair's diverging segment (or None) and whether its adversarial is nearest to its predicted class
    on every axis from the divergence on."""
    segments, joins = [], []
    nearest = nearest_class_by_median(adversarial, background, background_pred)  # (m, L)
    for a, b, near, pred in zip(benign, adversarial, nearest, adv_pred):
        segment = diverging_point(a, b, background).segment
        segments.append(segment)
        joins.append(segment is not None and bool(np.all(near[segment[1]:] == pred)))
    return segments, np.array(joins)


def segment_counts(segments: list, layers: list[str]) -> str:
    names = [f"{layers[s[0]]}→{layers[s[1]]}" if s else "none" for s in segments]
    values, counts = np.unique(names, return_counts=True)
    order = np.argsort(-counts)
    return ", ".join(f"{values[i]} {counts[i]}" for i in order)


def table(title: str, layers: list[str], rows: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"  {'':<28s}" + "".join(f"{name:>10s}" for name in layers))
    for label, values in rows.items():
        print(f"  {label:<28s}" + "".join(f"{v:>10.3f}" for v in values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="an analysis store with the profiles stage")
    parser.add_argument("--pairs", type=int, default=500, help="pairs sampled for F2/F3 and F8 (default 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refit", action="store_true", help="also refit the full background with another seed")
    parser.add_argument("--eps", type=float, help="attack the sampled benign images again with PGD at this ε")
    parser.add_argument("--steps", type=int, default=100, help="PGD iterations with --eps (default 100)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    started = time.perf_counter()

    session = Session(args.store)
    store, model = session.store, session.model
    group = store.group("profiles")
    attrs = dict(group.attrs)
    layers = list(attrs["layers"])
    params = {name: attrs[name] for name in FIT_PARAMS if name in attrs}
    embeddings = np.ascontiguousarray(group["embeddings"][...].T)
    labels = group["background_label"][...]
    preds = group["background_pred"][...]
    images = group["background_images"][...]
    print(f"store {args.store}: {len(labels)} background images, axes {', '.join(layers)}; stage time "
          f"{attrs.get('activation_seconds', 0) + attrs.get('warmup_seconds', 0) + attrs.get('fit_seconds', 0):.1f} s "
          f"(activations {attrs.get('activation_seconds')} s, warm-up {attrs.get('warmup_seconds')} s, fit "
          f"{attrs.get('fit_seconds')} s at load {attrs.get('machine', {}).get('load_average')}); "
          f"load now {os.getloadavg()[0]:.1f}")

    # F1
    accuracy, silhouette = separation(embeddings, labels)
    prints = fingerprints(histograms(embeddings, labels))
    peak = prints.max(axis=1)  # (classes, L)
    table("F1 classes condense with depth (background, true labels)", layers,
          {"15-NN accuracy (1-D)": accuracy, "silhouette (1-D)": silhouette,
           "mean fingerprint peak": list(peak.mean(axis=0))})
    print(f"  classes whose fingerprint peak is higher at {layers[-1]} than at {layers[0]}: "
          f"{int((peak[:, -1] > peak[:, 0]).sum())} of {len(peak)}")

    # F2/F3
    background = flattened_activations(model, torch.from_numpy(images), layers)
    profiles = ActivationProfiles.from_embeddings(background, embeddings, **params)
    table_ = store.pair_table()
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(table_["pair"]), min(args.pairs, len(table_["pair"])), replace=False))
    benign_images, adversarial_images = store.pair_images(chosen)
    adv_pred, true = table_["adv_pred"][chosen], table_["label"][chosen]
    attack = f"the store's attack {store.config['attack'].get('name')} ε = {store.config['attack'].get('eps')}"
    if args.eps is not None:
        pgd = PGD(model, args.eps, args.eps / 4, args.steps)
        attacked = []
        for start in range(0, len(chosen), 128):
            part = slice(start, start + 128)
            attacked.append(pgd(torch.from_numpy(benign_images[part]), torch.from_numpy(true[part])).detach())
        adversarial_images = torch.cat(attacked).numpy()
        with torch.no_grad():
            adv_pred = model(torch.from_numpy(adversarial_images)).argmax(1).numpy()
        success = adv_pred != true
        chosen, true, adv_pred = chosen[success], true[success], adv_pred[success]
        benign_images, adversarial_images = benign_images[success], adversarial_images[success]
        attack = f"PGD L∞ ε = {args.eps}, α = ε/4, {args.steps} steps ({success.mean():.0%} succeed)"
    benign, adversarial = pair_profiles(profiles, model, layers, benign_images, adversarial_images)
    segments, joins = divergences(benign, adversarial, embeddings, adv_pred, preds)
    diverging = np.array([s is not None for s in segments])
    print(f"\nF2/F3 diverging points over {len(chosen)} sampled pairs (seed {args.seed}) of {len(table_['pair'])}, "
          f"{attack}:")
    print(f"  with a diverging point (jump ≥ 1 IQR): {diverging.sum()} ({diverging.mean():.0%}); segments: "
          f"{segment_counts(segments, layers)}")
    print(f"  adversarial nearest to its predicted class on every axis from the divergence on: {joins.sum()} "
          f"({joins.sum() / max(1, diverging.sum()):.0%} of those with a diverging point)")
    near_last = nearest_class_by_median(adversarial, embeddings, preds)[:, -1]
    print(f"  A12 adversarial nearest to its predicted class at {layers[-1]}: {np.mean(near_last == adv_pred):.0%}")
    near_benign = nearest_class_by_median(benign, embeddings, preds)
    early = np.array([s is not None and s[0] >= 1 and bool(np.all(nb[:s[0] + 1] == t))
                      for s, nb, t in zip(segments, near_benign, true)])
    candidates = np.flatnonzero(joins & early)
    if len(candidates):
        jumps = [diverging_point(benign[i], adversarial[i], embeddings).jump for i in candidates]
        best = candidates[int(np.argmax(jumps))]
        result = diverging_point(benign[best], adversarial[best], embeddings)
        names = store.class_names
        print(f"  clearest inner divergence: pair {int(chosen[best])} ({names[true[best]]} → {names[adv_pred[best]]}): "
              f"{result.describe(layers)}, gaps {np.round(result.gaps, 2).tolist()} IQR; "
              f"{len(candidates)} pairs diverge after the first axis with the benign image on its class before")
    else:
        print("  no pair diverges after the first axis with the benign image on its class before")

    # F8
    fits = {"1000 (half)": np.sort(np.random.default_rng(args.seed + 1).choice(len(labels), len(labels) // 2,
                                                                              replace=False))}
    if args.refit:
        fits["2000 refit"] = np.arange(len(labels))
    for name, rows in fits.items():
        seed_params = dict(params, random_state=params["random_state"] + 1) if name == "2000 refit" else params
        seconds = time.perf_counter()
        refit, _ = fit_background(model, torch.from_numpy(images[rows]), layers, seed_params)
        refit = np.ascontiguousarray(refit.T)
        seconds = time.perf_counter() - seconds
        acc_r, sil_r = separation(refit, labels[rows])
        refitted = ActivationProfiles.from_embeddings([b[rows] for b in background], refit, **seed_params)
        benign_r, adversarial_r = pair_profiles(refitted, model, layers, benign_images, adversarial_images)
        segments_r, joins_r = divergences(benign_r, adversarial_r, refit, adv_pred, preds[rows])
        same = sum(a == b for a, b in zip(segments, segments_r))
        table(f"F8 background {name} vs the stored 2000 (fit {seconds:.0f} s)", layers,
              {"15-NN accuracy": acc_r, "silhouette": sil_r,
               "silhouette − stored": list(np.array(sil_r) - np.array(silhouette))})
        print(f"  A17 |silhouette difference| ≤ 0.1 on every axis: "
              f"{bool(np.all(np.abs(np.array(sil_r) - np.array(silhouette)) <= 0.1))}")
        print(f"  pairs with a diverging point: {sum(s is not None for s in segments_r)} (stored fit "
              f"{diverging.sum()}); the same segment (or none in both): {same} of {len(segments)}; joins: {joins_r.sum()}; "
              f"segments: {segment_counts(segments_r, layers)}")
    print(f"\n{time.perf_counter() - started:.0f} s in all; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
