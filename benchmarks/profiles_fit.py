"""Cost and quality of the aligned activation-profile fit on the demo model (spec-002 §1.3, §5, §6).

On ``fashion-resnet`` and a seeded sample of Fashion-MNIST test images (the background), with the
default profile layers (block outputs + logits, flattened C·H·W per image, no pooling: G-3):

* the ``profiles`` stage's three phases, as it runs them: capture (no-grad forward passes recording every
  layer), JIT warm-up (umap-learn's import and the SGD kernel, loaded from numba's disk cache once it has
  been compiled on this machine; ``--cold`` empties that cache first) and the aligned fit
  (``ActivationProfiles.fit``); wall and CPU seconds;
* neighbours: the fit's float32 Gram-matrix distances against float64 ones (time, kNN overlap);
* transform: 1 and 100 held-out test images (first call, then warm);
* quality: Spearman ρ of consecutive axes, the re-placement error of 200 background images (A8),
  classes condensing with depth in the fingerprints (A11/F1), held-out images nearest to their own
  class at the logits axis (A9);
* baseline (``--baseline``, same run): umap-learn's own ``AlignedUMAP.fit`` on float64 distance matrices (the
  fit before this one: it compiles its numba code in every process), and one plain 1-D UMAP per layer,
  unaligned — their times and the unaligned consecutive-axis |ρ| (A6: aligned should beat it by ≥ 0.2).

The goal for the prepare stage that will use the fit is ≤ 2 min on 2 cores including JIT warm-up
(capture + first fit). Timings depend on the machine's load: the 1-minute load average is printed with
each figure.

Usage::

    python benchmarks/profiles_fit.py [--images 2000] [--seed 0] [--baseline] [--cold]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from advlens.data import load_dataset
from advlens.models import load_model
from advlens.pipeline.stages_profiles import flattened_activations
from advlens.profiles import (
    ActivationProfiles,
    default_profile_layers,
    fingerprints,
    histograms,
    nearest_class_by_median,
)
from advlens.profiles._arrays import euclidean
from advlens.profiles.aligned import nearest_neighbours, warm_up

GOAL_SECONDS = 120.0


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def timed(label: str, function, *args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{label:<44s} {seconds:8.2f} s  CPU {cpu:8.2f} s   ({load()})", flush=True)
    return result, seconds, cpu


def flattened(model, images: torch.Tensor, layers: list[str]) -> list[np.ndarray]:
    return flattened_activations(model, images, layers)


def empty_numba_cache() -> int:
    """Remove the cached compilations of the fit's and the placement's SGD kernels (umap-learn's folder)."""
    import umap  # noqa: PLC0415

    folder = Path(umap.__file__).parent / "__pycache__"
    removed = 0
    for path in folder.glob("layouts._optimize_layout_*"):
        path.unlink()
        removed += 1
    return removed


def neighbour_check(background: list[np.ndarray], k: int = 15) -> None:
    """The fit's float32 Gram distances against float64 BLAS distances: time and kNN overlap per layer."""
    for layer in background:
        (indices, _), fast_s, _ = timed(f"  kNN float32 Gram, D = {layer.shape[1]}", nearest_neighbours, layer, k)
        start = time.perf_counter()
        exact = euclidean(layer, layer)
        np.fill_diagonal(exact, 0.0)
        reference = np.argsort(exact, axis=1, kind="stable")[:, :k]
        slow_s = time.perf_counter() - start
        overlap = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(indices, reference)])
        print(f"  {'':<42s} float64: {slow_s:6.2f} s ({slow_s / fast_s:.1f}× the float32 time); kNN overlap "
              f"{overlap:.4f}; identical rows {np.mean((indices == reference).all(axis=1)):.4f}")


def aligned_umap(background: list[np.ndarray], seed: int) -> np.ndarray:
    """umap-learn's AlignedUMAP on float64 distance matrices (the previous fit). Shape: (n, L)."""
    import umap  # noqa: PLC0415

    matrices = []
    for layer in background:
        matrix = euclidean(layer, layer).astype(np.float32)
        np.fill_diagonal(matrix, 0.0)
        matrices.append(matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = umap.AlignedUMAP(n_components=1, n_neighbors=15, metric="precomputed", random_state=seed).fit(
            matrices, relations=[{k: k for k in range(len(background[0]))}] * (len(background) - 1))
    return np.stack([e[:, 0] for e in fitted.embeddings_], axis=1)


def consecutive_rho(embeddings: np.ndarray) -> list[float]:
    return [float(spearmanr(embeddings[:, i], embeddings[:, i + 1]).statistic) for i in range(embeddings.shape[1] - 1)]


def unaligned(background: list[np.ndarray], seed: int) -> np.ndarray:
    import umap  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.stack([umap.UMAP(n_components=1, random_state=seed).fit(layer).embedding_[:, 0]
                         for layer in background], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="background images (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", action="store_true",
                        help="also run umap-learn's AlignedUMAP and one unaligned 1-D UMAP per layer")
    parser.add_argument("--cold", action="store_true", help="empty numba's cache of the SGD kernels first")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    print(f"CPUs {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"NUMBA_NUM_THREADS {os.environ.get('NUMBA_NUM_THREADS', 'default')}, {load()}")
    model = load_model("fashion-resnet")
    data = load_dataset("fashion-mnist", "test")
    order = np.random.default_rng(args.seed).permutation(len(data))
    chosen, held_out = np.sort(order[:args.images]), order[args.images:args.images + 100]
    images, labels = data.images[torch.as_tensor(chosen)], data.labels.numpy()[chosen]
    layers = default_profile_layers(model.graph)
    dims = [int(np.prod(model.graph[name].shape)) for name in layers]
    print(f"layers {', '.join(f'{n} ({d})' for n, d in zip(layers, dims))}: {sum(dims)} values per image, "
          f"{sum(dims) * 4 * len(chosen) / 2 ** 20:.0f} MiB for {len(chosen)} images")

    if args.cold:
        print(f"removed {empty_numba_cache()} cached kernel files: the warm-up compiles them")
    background, capture_s, capture_cpu = timed(f"capture {len(chosen)} images", flattened, model, images, layers)
    _, warm_s, warm_cpu = timed("JIT warm-up (umap import, SGD kernel)", warm_up)
    profiles, fit_s, fit_cpu = timed("aligned fit", ActivationProfiles(random_state=args.seed).fit, background)

    new = flattened(model, data.images[torch.as_tensor(held_out)], layers)
    timed("transform 1 image (first call)", profiles.transform, [x[:1] for x in new])
    timed("transform 1 image (warm)", profiles.transform, [x[:1] for x in new])
    placed, _, _ = timed("transform 100 images (warm)", profiles.transform, new)

    stage, stage_cpu = capture_s + warm_s + fit_s, capture_cpu + warm_cpu + fit_cpu
    print(f"\nstage = capture + warm-up + fit = {stage:.1f} s (CPU {stage_cpu:.1f} s); goal ≤ {GOAL_SECONDS:.0f} s "
          f"on 2 cores: {'met' if stage <= GOAL_SECONDS else 'NOT met'} at this load")
    print("neighbours (the fit's first step), float32 Gram vs float64:")
    neighbour_check(background)

    embeddings = profiles.embeddings_
    rho = consecutive_rho(embeddings)
    print(f"consecutive-axis Spearman ρ (aligned): {', '.join(f'{r:.3f}' for r in rho)}")
    again = profiles.transform([x[:200] for x in background])
    error = np.nanmedian(np.abs(again - embeddings[:200]), axis=0) / np.nanmax(np.ptp(embeddings, axis=0))
    print(f"A8 re-placed background, median |Δp| / range per axis: {', '.join(f'{e:.4f}' for e in error)}")
    prints = fingerprints(histograms(embeddings, labels))
    condensed = int((prints[:, :, -1].max(axis=1) > prints[:, :, 0].max(axis=1)).sum())
    print(f"A11/F1 classes whose fingerprint peak is higher at {layers[-1]} than at {layers[0]}: "
          f"{condensed} of {len(prints)}")
    true = data.labels.numpy()[held_out]
    predicted = model(data.images[torch.as_tensor(held_out)]).argmax(1).numpy()
    correct = predicted == true
    nearest = nearest_class_by_median(placed, embeddings, labels)[:, -1]
    print(f"A9 held-out correctly classified images nearest to their class at the logits axis: "
          f"{np.mean(nearest[correct] == true[correct]):.0%} of {int(correct.sum())}")
    print(f"disconnected background images per layer: {profiles.n_disconnected_.tolist()}")

    if args.baseline:
        reference, umap_s, umap_cpu = timed("baseline: umap-learn AlignedUMAP (compiles)", aligned_umap, background,
                                            args.seed)
        print(f"  stage with it = {capture_s + umap_s:.1f} s (CPU {capture_cpu + umap_cpu:.1f} s); this fit's "
              f"warm-up + fit / AlignedUMAP: wall {(warm_s + fit_s) / umap_s:.2f}, CPU "
              f"{(warm_cpu + fit_cpu) / umap_cpu:.2f}")
        rho_ref = consecutive_rho(reference)
        prints_ref = fingerprints(histograms(reference, labels))
        print(f"  AlignedUMAP consecutive ρ {', '.join(f'{r:.3f}' for r in rho_ref)}; fingerprint peak higher at "
              f"the last axis for {int((prints_ref[:, :, -1].max(1) > prints_ref[:, :, 0].max(1)).sum())} classes")
        plain, plain_s, _ = timed(f"baseline: {len(layers)} unaligned 1-D UMAPs", unaligned, background, args.seed)
        plain_rho = [abs(r) for r in consecutive_rho(plain)]
        print(f"consecutive-axis |ρ| unaligned: {', '.join(f'{r:.3f}' for r in plain_rho)}; median aligned "
              f"{np.median(np.abs(rho)):.3f} vs unaligned {np.median(plain_rho):.3f} (A6: ≥ +0.2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
