"""Share of neurons in the regions A / B / C of paper 001's Fig. 4, per band kind and level.

For a pair with benign class b and adversarial class a, each of the D neurons (inputs of the dense
layer) gets the band gap of §5.2.1 between the adversarial class's band and the benign class's band:
region **A** when the gap is > 0 (excited by the attack), **B** when it is 0 (the bands overlap or
touch: not significantly affected), **C** when it is < 0 (inhibited). A pair's shares are the
fractions of its D neurons in each region; the table gives their mean over all pairs of the store
(``Session.band_regions``), the 10th–90th percentiles of the pairs' B share, and how readable the
curves are against the bands: the share of neurons whose benign curve (the pair's benign image × the
benign class's weights) lies inside the benign band, and the same for the adversarial curve and band.

Bands: ``ci`` (confidence interval of the class mean at the level) and ``percentile`` (the central
``level`` share of the class distribution, e.g. 0.8 = 10th–90th percentiles). CI bands come from the
stored class mean/std/count at any level. Percentile levels the store holds come from the store;
others need the class distributions: with ``--recompute`` (default) the benign true positives are
run through the store's model once (what the statistics stage does) and the exact percentiles used;
rows computed that way are marked ``*``. Where a level is both stored and recomputed, the largest
difference between the two is printed as a check.

Usage::

    python benchmarks/band_regions.py stores/full-v1
    python benchmarks/band_regions.py STORE --ci 0.95 0.999 --percentile 0.5 0.8 --no-recompute
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from advlens import measures
from advlens.analysis import Session
from advlens.store import open_store

CI_LEVELS = (0.9, 0.95, 0.99, 0.999, 0.9999)
PERCENTILE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def class_contributions(session: Session, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Activation × own-class weight of every benign true positive (the statistics stage's input).

    Shape: returns contributions (N, D) float32 and labels (N,) int64.
    """
    attack = session.store.group("attack")
    labels = attack["label"][:]
    model, weight = session.model, session.model.dense_weight.float().cpu()
    parts = []
    for start in range(0, len(labels), batch_size):
        images = torch.from_numpy(attack["benign"][start:start + batch_size])
        with torch.no_grad():
            pooled = model.activations(images.to(session.device), feature_maps=False).pooled.float().cpu()
        parts.append((pooled * weight[torch.from_numpy(labels[start:start + batch_size])]).numpy())
    return np.concatenate(parts), labels


def exact_percentile_bands(contributions: np.ndarray, labels: np.ndarray, classes: int, level: float) -> measures.Bands:
    """Percentile bands straight from the class distributions (NumPy's linear percentiles).

    Shape: returns :class:`advlens.measures.Bands` (C, D).
    """
    low, high = measures.central_percentiles(level)
    lower = np.stack([np.percentile(contributions[labels == c], low, axis=0) for c in range(classes)])
    upper = np.stack([np.percentile(contributions[labels == c], high, axis=0) for c in range(classes)])
    return measures.Bands(torch.from_numpy(lower.astype(np.float32)), torch.from_numpy(upper.astype(np.float32)))


def region_rows(session: Session, bands: measures.Bands) -> np.ndarray:
    """Per-pair region shares for the given bands. Shape: (P, 3)."""
    t = session.table
    cells, inverse = np.unique(np.stack([t["label"], t["adv_pred"]], 1), axis=0, return_inverse=True)
    shares = np.stack([measures.band_regions(measures.pair_band_gap(bands, int(b), int(a))) for b, a in cells])
    return shares[inverse.reshape(-1)]


def curves_inside(session: Session, bands: measures.Bands) -> tuple[float, float]:
    """Mean share of neurons whose benign (adversarial) curve lies inside the benign (adversarial) band."""
    t = session.table
    weight = session.store.load("statistics", "dense_weight")
    benign = session.store.load("activations", "benign_pooled") * weight[t["label"]]
    adversarial = session.store.load("activations", "adv_pooled") * weight[t["adv_pred"]]
    low, high = bands.low.numpy(), bands.high.numpy()
    inside_b = (benign >= low[t["label"]]) & (benign <= high[t["label"]])
    inside_a = (adversarial >= low[t["adv_pred"]]) & (adversarial <= high[t["adv_pred"]])
    return float(inside_b.mean()), float(inside_a.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--ci", type=float, nargs="*", default=list(CI_LEVELS), help="CI levels")
    parser.add_argument("--percentile", type=float, nargs="*", default=list(PERCENTILE_LEVELS),
                        help="central shares of the class distribution (0.8 = 10th–90th percentiles)")
    parser.add_argument("--no-recompute", action="store_true",
                        help="only use the stored statistics (percentile levels the store lacks are interpolated)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    session = Session(open_store(args.store), device=args.device)
    attrs = dict(session.store.group("statistics").attrs)
    stored_levels = np.asarray(attrs.get("percentile_levels", []), dtype=np.float64)
    print(f"store {args.store}: {session.num_pairs} pairs, {session.num_classes} classes, "
          f"{session.store.load('statistics', 'dense_weight').shape[1]} neurons, class counts "
          f"{session.store.load('statistics', 'class_count').tolist()}; store default band: "
          f"{session.band_kind} {session.band_level:g}")

    contributions = labels = None
    needs = [lv for lv in args.percentile
             if not all(np.any(np.abs(stored_levels - p) < 1e-6) for p in measures.central_percentiles(lv))]
    if needs and not args.no_recompute:
        start = time.perf_counter()
        contributions, labels = class_contributions(session)
        print(f"recomputed the class distributions of {len(labels)} benign true positives in "
              f"{time.perf_counter() - start:.1f} s")

    print(f"\n{'kind':<11}{'level':>7}  {'interval':<22}{'A (>0)':>8}{'B (=0)':>8}{'C (<0)':>8}  "
          f"{'B share, pairs p10–p90':>22}  {'curve in band: benign':>21}{'adversarial':>12}")
    for level in args.ci:
        rows = session.band_regions(level=level, kind="ci")
        mean = rows.mean(0) * 100
        p10, p90 = np.percentile(rows[:, 1], [10, 90]) * 100
        inside = curves_inside(session, session.bands(level, "ci"))
        print(f"{'ci':<11}{level:>7g}  {'CI of the mean':<22}{mean[0]:>7.1f}%{mean[1]:>7.1f}%{mean[2]:>7.1f}%  "
              f"{p10:>13.1f}% – {p90:.1f}%  {inside[0] * 100:>20.1f}%{inside[1] * 100:>11.1f}%")
    for level in args.percentile:
        low, high = measures.central_percentiles(level)
        exact = level in needs and contributions is not None
        if exact:
            bands = exact_percentile_bands(contributions, labels, session.num_classes, level)
            rows = region_rows(session, bands)
        else:
            bands = session.bands(level, "percentile")
            rows = session.band_regions(level=level, kind="percentile")
        inside = curves_inside(session, bands)
        mean = rows.mean(0) * 100
        p10, p90 = np.percentile(rows[:, 1], [10, 90]) * 100
        interval = f"p{low:g}–p{high:g}" + (" *" if exact else "")
        print(f"{'percentile':<11}{level:>7g}  {interval:<22}{mean[0]:>7.1f}%{mean[1]:>7.1f}%{mean[2]:>7.1f}%  "
              f"{p10:>13.1f}% – {p90:.1f}%  {inside[0] * 100:>20.1f}%{inside[1] * 100:>11.1f}%")
    if contributions is not None:
        checked = [lv for lv in args.percentile if lv not in needs]
        if checked:
            diff = max(float((exact_percentile_bands(contributions, labels, session.num_classes, lv).low
                              - session.bands(lv, "percentile").low).abs().max()) for lv in checked)
            print(f"\ncheck: stored vs recomputed percentile bands differ by at most {diff:.2e}")
    if contributions is not None:
        print("\n* exact percentiles recomputed from the model (the store lacks them)")


if __name__ == "__main__":
    main()
