"""How readable the Neuron Cluster View's dendrogram is, per metric and linkage.

For random pairs of ``STORE``, clusters the analysed layer's neurons (``Session.clustering``) and
reports, averaged over the pairs:

- ``largest of 4``: share of neurons in the largest group when the tree is cut into 4 groups
  (``scipy.cluster.hierarchy.fcluster(..., 4, "maxclust")``) — near 100% means one blob;
- ``tiny of 4``: how many of those 4 groups hold fewer than 5 neurons (outliers, not groups);
- ``chain merges``: share of merges that add a single neuron to a cluster of ≥ 10 — a chained,
  staircase-like tree;
- ``empty RFs``: share of neurons whose RFs are empty on both images (one flat group at height 0).

With ``--png DIR`` it also draws each pair's dendrograms (rows: linkages, columns: metrics) with
SciPy + Matplotlib, to look at.

Usage::

    python benchmarks/dendrogram_shapes.py stores/full-v1 --pairs 30 --png /tmp/dendrograms
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.cluster import hierarchy

from advlens.analysis import Session
from advlens.store import open_store


def shape_figures(linkage: np.ndarray, groups: int = 4) -> tuple[float, int, float]:
    """Largest-group share and tiny-group count at ``groups`` groups, and the chain-merge share."""
    k = linkage.shape[0] + 1
    sizes = np.bincount(hierarchy.fcluster(linkage, groups, "maxclust"))[1:]
    size = np.ones(2 * k - 1)
    chain = 0
    for i, (a, b, _, count) in enumerate(linkage):
        small, large = sorted((size[int(a)], size[int(b)]))
        chain += small == 1 and large >= 10
        size[k + i] = count
    return sizes.max() / k, int((sizes < 5).sum()), chain / (k - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--metrics", nargs="*", default=["rf_l2", "mask_l2"])
    parser.add_argument("--methods", nargs="*", default=["average", "complete", "ward"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", type=Path, help="draw the dendrograms of the first 3 pairs into this folder")
    args = parser.parse_args()

    session = Session(open_store(args.store), device="cpu")
    pairs = np.random.default_rng(args.seed).choice(session.num_pairs, min(args.pairs, session.num_pairs),
                                                    replace=False)
    empty = [float((~b.flatten(1).any(1) & ~a.flatten(1).any(1)).float().mean())
             for b, a in (session.receptive_fields(int(p)) for p in pairs)]
    print(f"{len(pairs)} pairs, {session.num_neurons} neurons; empty RFs on both images: "
          f"{np.mean(empty) * 100:.1f}% of neurons (min {min(empty) * 100:.0f}%, max {max(empty) * 100:.0f}%)\n")
    print(f"{'metric':<10}{'linkage':<10}{'largest of 4':>13}{'tiny of 4':>11}{'chain merges':>14}")
    for metric in args.metrics:
        for method in args.methods:
            rows = np.array([shape_figures(session.clustering(int(p), metric, method).linkage_) for p in pairs])
            print(f"{metric:<10}{method:<10}{rows[:, 0].mean() * 100:>12.1f}%{rows[:, 1].mean():>11.2f}"
                  f"{rows[:, 2].mean() * 100:>13.1f}%")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.png.mkdir(parents=True, exist_ok=True)
        for pair in pairs[:3]:
            fig, axes = plt.subplots(len(args.methods), len(args.metrics), squeeze=False,
                                     figsize=(9 * len(args.metrics), 3.2 * len(args.methods)))
            for i, method in enumerate(args.methods):
                for j, metric in enumerate(args.metrics):
                    linkage = session.clustering(int(pair), metric, method).linkage_
                    hierarchy.dendrogram(linkage, ax=axes[i, j], no_labels=True,
                                         color_threshold=0.7 * linkage[:, 2].max())
                    axes[i, j].set_title(f"pair {pair}: {metric}, {method} linkage")
            fig.tight_layout()
            fig.savefig(args.png / f"dendrogram_pair{pair}.png", dpi=60)
            plt.close(fig)
        print(f"\ndendrograms of pairs {pairs[:3].tolist()} in {args.png}")


if __name__ == "__main__":
    main()
