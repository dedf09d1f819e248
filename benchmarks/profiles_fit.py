"""Cost and quality of the aligned activation-profile fit on the demo model (spec-002 §1.3, §5, §6).

On ``fashion-resnet`` and a seeded sample of Fashion-MNIST test images (the background), with the
default profile layers (block outputs + logits, flattened C·H·W per image, no pooling: G-3):

* capture: one no-grad forward pass over the background recording every layer;
* fit: ``ActivationProfiles.fit`` twice in this process — the first pays numba's compilation of
  umap-learn (JIT warm-up), the second shows the steady cost (AlignedUMAP still compiles its aligned
  SGD on every fit);
* transform: 1 and 100 held-out test images (first call, then warm);
* quality: Spearman ρ of consecutive axes, the re-placement error of 200 background images (A8),
  classes condensing with depth in the fingerprints (A11/F1), held-out images nearest to their own
  class at the logits axis (A9);
* baseline (``--baseline``, same run): one plain 1-D UMAP per layer, unaligned — its time and its
  consecutive-axis |ρ| (A6: aligned should beat it by ≥ 0.2).

The goal for the prepare stage that will use the fit is ≤ 2 min on 2 cores including JIT warm-up
(capture + first fit). Timings depend on the machine's load: the 1-minute load average is printed with
each figure.

Usage::

    python benchmarks/profiles_fit.py [--images 2000] [--seed 0] [--baseline]
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import numpy as np
import torch
from scipy.stats import spearmanr

from advlens.data import load_dataset
from advlens.models import load_model
from advlens.profiles import (
    ActivationProfiles,
    default_profile_layers,
    fingerprints,
    histograms,
    nearest_class_by_median,
)

GOAL_SECONDS = 120.0


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def timed(label: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<44s} {seconds:8.2f} s   ({load()})", flush=True)
    return result, seconds


def flattened(model, images: torch.Tensor, layers: list[str]) -> list[np.ndarray]:
    captured = model.capture(images, layers)
    return [captured[name].reshape(len(images), -1).numpy().astype(np.float32) for name in layers]


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
    parser.add_argument("--baseline", action="store_true", help="also fit one unaligned 1-D UMAP per layer")
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

    background, capture_s = timed(f"capture {len(chosen)} images", flattened, model, images, layers)
    profiles, first_s = timed("fit 1 (with numba JIT warm-up)", ActivationProfiles(random_state=args.seed).fit,
                              background)
    _, second_s = timed("fit 2 (warm)", ActivationProfiles(random_state=args.seed).fit, background)

    new = flattened(model, data.images[torch.as_tensor(held_out)], layers)
    timed("transform 1 image (first call)", profiles.transform, [x[:1] for x in new])
    timed("transform 1 image (warm)", profiles.transform, [x[:1] for x in new])
    placed, _ = timed("transform 100 images (warm)", profiles.transform, new)

    stage = capture_s + first_s
    print(f"\ncapture + first fit = {stage:.1f} s; goal ≤ {GOAL_SECONDS:.0f} s on 2 cores: "
          f"{'met' if stage <= GOAL_SECONDS else 'NOT met'} at this load; warm fit / first fit = "
          f"{second_s / first_s:.2f}")

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
        plain, plain_s = timed(f"baseline: {len(layers)} unaligned 1-D UMAPs", unaligned, background, args.seed)
        plain_rho = [abs(r) for r in consecutive_rho(plain)]
        print(f"consecutive-axis |ρ| unaligned: {', '.join(f'{r:.3f}' for r in plain_rho)}; median aligned "
              f"{np.median(np.abs(rho)):.3f} vs unaligned {np.median(plain_rho):.3f} (A6: ≥ +0.2); "
              f"warm aligned fit / unaligned fits = {second_s / plain_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
