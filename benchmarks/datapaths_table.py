"""Paper 003's Table 1 on the demo model: diverging–merging patterns of the chain vs unconstrained datapaths.

The adversarials are successful pairs of an analysis store (default ``stores/full``: the demo model,
Fashion-MNIST test split, PGD L∞), ``--adversarials`` of them spread evenly over the source classes
(seeded). Each gets ``--targets`` target images: benign true positives of its adversarial class from the
store's attack stage, never its own source. Both methods extract adv, src and targets with the same loss
(λ̃ = ``--lam``, T = ``--steps``): the chain adv → src → targets with γ̃ = ``--gamma`` and U, the same loss
with γ̃ = 0 (independent extraction). Per adversarial the targets are ranked by whole-network
‖z_adv − z_tar‖₂; Eq. 9 runs over the evaluation layers (all gate points when widths never decrease),
Eq. 10 with r = ``--r`` (default ⌈m/3⌉ for m < 30), with raw ℓ2 layer distances (the paper's) and
RMS-normalised ones (÷√n_ℓ). Printed as Markdown: per source class and average top-1/3/5 (U / chain),
detection rates, mean distances, and label preservation per role (continuous gates, binary τ = 0.5
before the label guard, after it). ``--small`` is the CI version (10 adversarials × 5 targets, T = 100).

The selection (images, classes, the model's fingerprint) can be written to a small ``.npz`` with
``--export-selection`` and run elsewhere with ``--selection`` (e.g. on a GPU machine without the store);
the model is then the store's built-in spec with its shipped weights, checked against the fingerprint.

Usage::

    python benchmarks/datapaths_table.py --store stores/full --adversarials 50 --targets 20
    python benchmarks/datapaths_table.py --small
    python benchmarks/datapaths_table.py --export-selection sel.npz && \
        python benchmarks/datapaths_table.py --selection sel.npz --device cuda
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from advlens.analysis.core import SessionCore
from advlens.datapaths import (DatapathChain, datapath_chain, default_r, diff_curve, evaluation_layers,
                               pattern_detected, top_k_score)
from advlens.errors import AdvlensError, ModelError
from advlens.models import load_model
from advlens.models.fingerprint import model_fingerprint

logger = logging.getLogger("datapaths_table")
KS = (1, 3, 5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="stores/full")
    parser.add_argument("--adversarials", type=int, default=50)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--r", type=int, default=None, help="Eq. 10 window (default ⌈m/3⌉ or 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--small", action="store_true", help="CI version: 10 adversarials × 5 targets, T = 100")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--export-selection", metavar="NPZ", help="write the selection from --store here and stop")
    parser.add_argument("--selection", metavar="NPZ", help="run on an exported selection instead of --store")
    args = parser.parse_args(argv)
    if args.small:
        args.adversarials, args.targets, args.steps = 10, 5, 100
    if min(args.adversarials, args.targets, args.steps, args.threads, args.batch_size) < 1:
        parser.error("--adversarials, --targets, --steps, --threads and --batch-size must be ≥ 1")
    return args


@dataclass
class Selection:
    """The adversarials, their sources and targets. Shapes: (A, C, H, W) ×2, (A, K, C, H, W); labels, pairs (A,)."""

    adversarial: torch.Tensor
    source: torch.Tensor
    targets: torch.Tensor
    source_class: np.ndarray
    adv_class: np.ndarray
    pairs: np.ndarray

    def save(self, path: str, spec: str, sha256: str, class_names: list[str]) -> None:
        np.savez_compressed(path, adversarial=self.adversarial.numpy(), source=self.source.numpy(),
                            targets=self.targets.numpy(), source_class=self.source_class, adv_class=self.adv_class,
                            pairs=self.pairs, spec=np.array(spec), sha256=np.array(sha256),
                            class_names=np.array(class_names))

    @staticmethod
    def load(path: str) -> tuple[Selection, str, str, list[str]]:
        """The selection, the model spec, its weights' fingerprint and the class names."""
        with np.load(path, allow_pickle=False) as data:
            selection = Selection(*(torch.from_numpy(data[name]) for name in ("adversarial", "source", "targets")),
                                  data["source_class"], data["adv_class"], data["pairs"])
            return selection, str(data["spec"]), str(data["sha256"]), [str(n) for n in data["class_names"]]


def select(store, count: int, per: int, seed: int) -> Selection:
    """``count`` successful pairs spread over the source classes, each with ``per`` targets."""
    rng = np.random.default_rng(seed)
    table = store.pair_table()
    wrong = np.flatnonzero(table["adv_pred"] != table["label"])
    classes = np.unique(table["label"][wrong])
    chosen: list[int] = []
    for i in range(count):  # round-robin over classes, random pairs within a class
        pool = np.setdiff1d(wrong[table["label"][wrong] == classes[i % len(classes)]], chosen)
        chosen.append(int(rng.choice(pool)))
    pairs = np.array(chosen)
    benign, adversarial = store.pair_images(pairs)
    attack = store.group("attack")
    labels, preds = attack["label"][...], attack["benign_pred"][...]
    images = attack["benign"]
    targets = np.empty((count, per, *benign.shape[1:]), dtype=np.float32)
    for a, pair in enumerate(pairs):
        c = table["adv_pred"][pair]
        pool = np.setdiff1d(np.flatnonzero((labels == c) & (preds == c)), [table["row"][pair]])
        rows = np.sort(rng.choice(pool, size=per, replace=False))
        targets[a] = images.get_orthogonal_selection((rows,))
    return Selection(torch.from_numpy(adversarial), torch.from_numpy(benign), torch.from_numpy(targets),
                     table["label"][pairs], table["adv_pred"][pairs], pairs)


def patterns(chain: DatapathChain, layers: list[str], r: int, distance: str) -> np.ndarray:
    """Eq. 10 per (adversarial, target). Shape: (A, K) bool."""
    per = chain.targets_per_adversarial
    diff = diff_curve(chain.adv.z.repeat_interleave(per, 0), chain.src.z.repeat_interleave(per, 0), chain.tar.z,
                      chain.adv.layout, layers, distance)
    return np.array([pattern_detected(row, r) for row in diff]).reshape(len(chain.adv), per)


def fidelity(chain: DatapathChain) -> dict[str, tuple[float, float, float]]:
    """Per role: label kept with continuous gates, binary τ = .5 (before the guard), after the guard."""
    out = {}
    for role, paths, sets in (("adv", chain.adv, chain.adv_set), ("src", chain.src, chain.src_set),
                              ("tar", chain.tar, chain.tar_set)):
        binary = (sets.tau == 0.5) & sets.label_kept
        out[role] = (paths.label_kept.float().mean().item(), binary.float().mean().item(),
                     sets.label_kept.float().mean().item())
    return out


def class_table(scores: dict[str, dict[int, np.ndarray]], classes: np.ndarray, names: list[str]) -> list[str]:
    present = np.unique(classes)
    head = "| K | " + " | ".join(names[c] for c in present) + " | avg |"
    lines = [head, "|" + "---|" * (len(present) + 2)]
    for k in KS:
        cells = [f"{scores['U'][k][classes == c].mean():.2f}/{scores['chain'][k][classes == c].mean():.2f}"
                 for c in present]
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {scores['U'][k].mean():.3f}/{scores['chain'][k].mean():.3f} |")
    return lines


def selected(args: argparse.Namespace):
    """The model (on ``--device``), the selection, the class names and where they came from."""
    if args.selection:
        selection, spec, sha256, names = Selection.load(args.selection)
        model = load_model(spec)
        if model_fingerprint(model) != sha256:
            raise ModelError(f"the selection {args.selection} was made with other weights of {spec!r} than the "
                             "shipped ones; run it where its store is")
        return model.to(args.device), selection, names, f"selection {args.selection} (pairs of its store)"
    session = SessionCore(args.store)
    selection = select(session.store, args.adversarials, args.targets, args.seed)
    return session.model.to(args.device), selection, session.class_names, f"store {args.store}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    try:
        model, selection, names, source = selected(args)
    except AdvlensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.export_selection:
        selection.save(args.export_selection, model.spec, model_fingerprint(model), names)
        print(f"selection of {len(selection.pairs)} adversarials × {selection.targets.shape[1]} targets written to "
              f"{args.export_selection}")
        return 0
    options = dict(lam=args.lam, steps=args.steps, seed=args.seed, batch_size=args.batch_size)
    chains, seconds = {}, {}
    for method, gamma in (("U", 0.0), ("chain", args.gamma)):
        start = time.perf_counter()
        chains[method] = datapath_chain(model, selection.adversarial, selection.source, selection.targets,
                                        gamma=gamma, **options)
        seconds[method] = time.perf_counter() - start
        logger.info("%s: %.0f s", method, seconds[method])
    layout = chains["U"].adv.layout
    layers = evaluation_layers(model, layout.layers)
    r = args.r or default_r(len(layers))
    scores = {d: {} for d in ("raw", "rms")}
    detection, distances = {}, {}
    for method, chain in chains.items():
        dist = chain.target_distances().numpy()
        for d in ("raw", "rms"):
            found = patterns(chain, layers, r, d)
            scores[d][method] = {k: top_k_score(dist, found, k) for k in KS}
            detection[(method, d)] = found.mean()
        distances[method] = (torch.linalg.vector_norm(chain.src.z - chain.adv.z, dim=1).mean().item(), dist.mean())

    load = os.getloadavg()
    print(f"## Datapaths Table 1 on {model.spec}: {len(selection.pairs)} misclassified adversarials × "
          f"{selection.targets.shape[1]} "
          f"targets, λ̃ = {args.lam}, γ̃ = {args.gamma} (chain) vs 0 (U), T = {args.steps}, r = {r} over "
          f"{len(layers)} layers")
    print(f"\n{source}; device {args.device}; {args.threads} thread(s); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"extraction U {seconds['U']:.0f} s, chain {seconds['chain']:.0f} s")
    for d, title in (("raw", "raw ℓ2 layer distances (Eq. 9)"), ("rms", "RMS-normalised layer distances (÷√n_ℓ)")):
        print(f"\n### Top-K score, U / chain, per source class — {title}\n")
        print("\n".join(class_table(scores[d], selection.source_class, names)))
    print("\n### Summary\n")
    print("| method | top-1/3/5 raw | top-1/3/5 RMS | detected raw / RMS | dis adv–src / adv–tar | "
          "label kept adv, src, tar: continuous / binary τ=.5 / guarded |")
    print("|---|---|---|---|---|---|")
    for method, chain in chains.items():
        fid = fidelity(chain)
        cells = " ; ".join(f"{role} {c:.0%}/{b:.0%}/{g:.0%}" for role, (c, b, g) in fid.items())
        raw = "/".join(f"{scores['raw'][method][k].mean():.2f}" for k in KS)
        rms = "/".join(f"{scores['rms'][method][k].mean():.2f}" for k in KS)
        print(f"| {method} | {raw} | {rms} | {detection[(method, 'raw')]:.3f} / {detection[(method, 'rms')]:.3f} | "
              f"{distances[method][0]:.2f} / {distances[method][1]:.2f} | {cells} |")
    raw = scores["raw"]
    classes = np.unique(selection.source_class)
    for k in (3, 5):
        wins = sum(raw["chain"][k][selection.source_class == c].mean() >= raw["U"][k][selection.source_class == c].mean()
                   for c in classes)
        print(f"\nA9, K = {k}: chain {raw['chain'][k].mean():.3f} vs U {raw['U'][k].mean():.3f} on average; chain ≥ U "
              f"on {wins} of {len(classes)} classes")
    for method in chains:
        for d in ("raw", "rms"):
            means = [scores[d][method][k].mean() for k in KS]
            if not (all(0 <= m <= k for m, k in zip(means, KS)) and means == sorted(means)):
                print(f"error: {method} {d} scores {means} are not in [0, K] and non-decreasing in K", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
