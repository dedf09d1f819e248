"""Reading an analysis store lazily: arrays are Zarr arrays, loaded only when indexed."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from advlens.errors import StoreError
from advlens.store.manifest import STAGES, check_schema, read_manifest


class AnalysisStore:
    """A prepared store: the manifest plus one Zarr group per finished stage.

    Stage groups and their arrays:
        predict: dataset_index, label, pred, probs (M, C), true_positive — every examined image.
        attack: dataset_index, label, benign, adversarial (T, C, H, W), benign_pred, benign_probs,
            adv_pred, adv_probs, l2, linf, attacked, success — every true positive.
        activations: row (index into attack), dataset_index, benign_pooled, adv_pooled (P, D),
            benign_maps, adv_maps (P, K, h, w), benign_max, adv_max (P, K) — successful pairs only.
        statistics: dense_weight (C, D), dense_bias (C,), class_count (C,), class_mean, class_std,
            class_lower, class_upper (C, D), class_percentiles (L, C, D), neuron_quantiles (Q, K),
            neuron_threshold, neuron_mean, neuron_max (K,).
        projections: benign_tsne, adv_tsne (P, 2).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreError(f"no analysis store at {self.root}; create one with `advlens prepare --out {self.root}`")
        manifest = read_manifest(self.root)
        if manifest is None:
            raise StoreError(f"{self.root} has no manifest.json: not an advlens store (or its prepare never started)")
        check_schema(manifest, self.root)
        self.manifest: dict[str, Any] = manifest

    def __repr__(self) -> str:
        return f"AnalysisStore({str(self.root)!r}, stages={list(self.manifest['stages'])})"

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def finished_stages(self) -> list[str]:
        return [s for s in STAGES if s in self.manifest["stages"]]

    @property
    def complete(self) -> bool:
        return len(self.finished_stages) == len(STAGES)

    @property
    def class_names(self) -> list[str]:
        return list(self.config["model"]["class_names"])

    def group(self, stage: str) -> zarr.Group:
        """The Zarr group of a finished stage."""
        if stage not in self.manifest["stages"]:
            raise StoreError(
                f"stage {stage!r} of the store at {self.root} is not finished (finished: "
                f"{', '.join(self.finished_stages) or 'none'}); run `advlens prepare` again to resume it"
            )
        return self._groups[stage]

    @cached_property
    def _groups(self) -> dict[str, zarr.Group]:
        return {s: zarr.open_group(str(self.root / s), mode="r") for s in self.finished_stages}

    def array(self, stage: str, name: str) -> zarr.Array:
        """A lazy array of a stage; index it (``[:]``, ``[i]``) to load values."""
        group = self.group(stage)
        if name not in group:
            raise StoreError(f"the store at {self.root} has no array {stage}/{name}")
        return group[name]  # type: ignore[return-value]

    def load(self, stage: str, name: str) -> np.ndarray:
        """Load a whole array into memory."""
        return self.array(stage, name)[...]

    @property
    def num_pairs(self) -> int:
        return int(self.array("activations", "row").shape[0])

    def pair_images(self, pairs: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Benign and adversarial images of the given pair ids.

        Shape:
            returns two arrays (len(pairs), C, H, W) float32 in [0, 1].
        """
        pairs = np.asarray(pairs, dtype=np.int64)
        if pairs.size and (pairs.min() < 0 or pairs.max() >= self.num_pairs):
            raise IndexError(f"pair ids must lie in 0..{self.num_pairs - 1}")
        rows = self.load("activations", "row")[pairs]
        order = np.argsort(rows)
        benign = np.empty((len(rows), *self.array("attack", "benign").shape[1:]), dtype=np.float32)
        adversarial = np.empty_like(benign)
        if len(rows):
            benign[order] = self.array("attack", "benign").get_orthogonal_selection((rows[order],))
            adversarial[order] = self.array("attack", "adversarial").get_orthogonal_selection((rows[order],))
        return benign, adversarial

    def pair_table(self) -> dict[str, np.ndarray]:
        """Per successful pair: dataset index, label, predictions, probabilities and perturbation sizes."""
        rows = self.load("activations", "row")
        table = {"pair": np.arange(len(rows)), "row": rows}
        for name in ("dataset_index", "label", "benign_pred", "adv_pred", "l2", "linf"):
            table[name] = self.load("attack", name)[rows]
        for name in ("benign_probs", "adv_probs"):
            table[name] = self.load("attack", name)[rows]
        return table


def open_store(path: str | Path) -> AnalysisStore:
    """Open an analysis store lazily; refuses stores of another schema version."""
    return AnalysisStore(path)
