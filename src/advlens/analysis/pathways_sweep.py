"""Reading a store's strength sweep for the pathways analysis: image sets, stored maxima and images.

The ``sweep`` stage (``advlens.pipeline``) holds, for the pathway layers of its attrs ``layers``:
the benign maxima of every benign true positive (``benign_index`` rows, ``benign_max_L{i:02d}``) and,
for a seeded per-class sample (``sample_index`` rows), every attack's and strength's prediction,
maxima and perturbation (``adv_pred``, ``adv_max_L{i:02d}``, ``adv_delta``). A targeted sweep of one
class pair (``store.derived("targeted-sweep")``) has the same sample arrays; its benign sets are the
stage's. Rows index the ``predict`` stage (the examined images); the benign images themselves are
read from the ``attack`` stage, which holds every true positive.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np

from advlens.errors import StoreError
from advlens.store import AnalysisStore

STAGE = "sweep"


def layer_array(kind: str, index: int) -> str:
    """Stored name of a layer's maxima: ``benign_max_L03`` / ``adv_max_L03``."""
    return f"{kind}_max_L{index:02d}"


class SweepView:
    """The sweep of ``store``: benign sets from the ``sweep`` stage, attacked sets from ``sample``.

    Args:
        store: a store holding the ``sweep`` stage (else :class:`StoreError` naming the command).
        sample: the arrays of a targeted sweep (``sample_index``, ``sample_label``, ``adv_pred``,
            ``adv_max_L…``, ``adv_delta``) and its ``attrs``; None: the stage's own sample.
    """

    def __init__(self, store: AnalysisStore, sample: tuple[Mapping[str, np.ndarray], Mapping[str, Any]] | None = None
                 ) -> None:
        self.store = store
        self.group = store.group(STAGE)  # StoreError with the add-stage command when it is missing
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        self._sample_arrays, sample_attrs = sample if sample is not None else (None, {})
        self.sample_attrs: dict[str, Any] = dict(sample_attrs) if sample is not None else self.attrs
        self.layers: tuple[str, ...] = tuple(self.attrs["layers"])
        self.channels: np.ndarray = np.asarray(self.attrs["channels"], dtype=np.int64)
        self.attacks: tuple[str, ...] = tuple(self.sample_attrs.get("attacks", self.attrs["attacks"]))
        self.eps: np.ndarray = np.asarray(self.sample_attrs.get("eps", self.attrs["eps"]), dtype=np.float64)

    @property
    def targeted(self) -> bool:
        return self._sample_arrays is not None

    # ------------------------------------------------------------------ sample (attacked) arrays
    def _sample(self, name: str):
        if self._sample_arrays is not None:
            if name not in self._sample_arrays:
                raise StoreError(f"the targeted sweep of the store at {self.store.root} has no array {name!r}; "
                                 "compute it again with `advlens pathways STORE --original C --target C --targeted`")
            return self._sample_arrays[name]
        return self.group[name]

    @cached_property
    def sample_index(self) -> np.ndarray:
        """Predict-stage rows of the sampled images. Shape: (S,) int64."""
        return np.asarray(self._sample("sample_index")[...], dtype=np.int64)

    @cached_property
    def sample_label(self) -> np.ndarray:
        return np.asarray(self._sample("sample_label")[...], dtype=np.int64)

    @cached_property
    def adv_pred(self) -> np.ndarray:
        """Prediction of every attack, strength and sampled image. Shape: (A, E, S) int64."""
        return np.asarray(self._sample("adv_pred")[...], dtype=np.int64)

    @cached_property
    def benign_index(self) -> np.ndarray:
        return np.asarray(self.group["benign_index"][...], dtype=np.int64)

    @cached_property
    def benign_label(self) -> np.ndarray:
        return np.asarray(self.group["benign_label"][...], dtype=np.int64)

    def attack_index(self, attack: str) -> int:
        return self.attacks.index(attack)

    # ------------------------------------------------------------------ image sets (spec-004 §1)
    def benign_rows(self, label: int) -> np.ndarray:
        """Positions in the benign arrays of the true positives of ``label``. Shape: (n,) int64."""
        return np.flatnonzero(self.benign_label == label)

    def attacked_rows(self, original: int, target: int) -> np.ndarray:
        """Per attack and strength, which sampled images of ``original`` are predicted ``target``.
        Shape: (A, E, S) bool."""
        return (self.sample_label == original)[None, None, :] & (self.adv_pred == target)

    # ------------------------------------------------------------------ maxima
    def benign_max(self, layer: int, rows: np.ndarray) -> np.ndarray:
        """Benign maxima of ``layer`` (index in :attr:`layers`) at benign positions ``rows``. Shape: (n, C)."""
        array = self.group[layer_array("benign", layer)]
        if len(rows) == 0:
            return np.zeros((0, int(self.channels[layer])), dtype=np.float32)
        return np.asarray(array.get_orthogonal_selection((np.asarray(rows), slice(None))), dtype=np.float32)

    def adv_max(self, layer: int, rows: np.ndarray) -> np.ndarray:
        """Attacked maxima of ``layer`` for sampled positions ``rows``, every attack and strength.
        Shape: (A, E, n, C) float32."""
        array = self._sample(layer_array("adv", layer))
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((len(self.attacks), len(self.eps), 0, int(self.channels[layer])), dtype=np.float32)
        if isinstance(array, np.ndarray):
            return array[:, :, rows].astype(np.float32)
        return np.asarray(array.get_orthogonal_selection((slice(None), slice(None), rows, slice(None))),
                          dtype=np.float32)

    # ------------------------------------------------------------------ images
    @cached_property
    def _attack_rows(self) -> np.ndarray:
        """Attack-stage row of every predict-stage row (−1: not a true positive)."""
        predict_index = np.asarray(self.store.group("predict")["dataset_index"][...], dtype=np.int64)
        attack_index = np.asarray(self.store.group("attack")["dataset_index"][...], dtype=np.int64)
        order = np.argsort(attack_index, kind="stable")
        found = np.searchsorted(attack_index[order], predict_index).clip(0, max(len(order) - 1, 0))
        rows = np.full(len(predict_index), -1, dtype=np.int64)
        if len(order):
            hit = attack_index[order][found] == predict_index
            rows[hit] = order[found[hit]]
        return rows

    def _benign_images(self, predict_rows: np.ndarray) -> np.ndarray:
        rows = self._attack_rows[predict_rows]
        if np.any(rows < 0):
            raise StoreError(f"the sweep of the store at {self.store.root} names images that are not true positives "
                             f"of its attack stage; rebuild it with `{self.store.rebuild_command(STAGE)}`")
        benign = self.store.group("attack")["benign"]
        out = np.empty((len(rows), *benign.shape[1:]), dtype=np.float32)
        if len(rows):
            order = np.argsort(rows)
            out[order] = benign.get_orthogonal_selection((rows[order],))
        return out

    def benign_images(self, rows: np.ndarray) -> np.ndarray:
        """Images of the benign positions ``rows``. Shape: (n, c, H, W) float32 in [0, 1]."""
        return self._benign_images(self.benign_index[np.asarray(rows, dtype=np.int64)])

    def attacked_images(self, attack: int, strength: int, rows: np.ndarray) -> np.ndarray:
        """Adversarial images (benign + stored perturbation, clipped to [0, 1]) of sampled positions ``rows``.
        Shape: (n, c, H, W) float32."""
        rows = np.asarray(rows, dtype=np.int64)
        benign = self._benign_images(self.sample_index[rows])
        delta = self._sample("adv_delta")
        if len(rows) == 0:
            return benign
        if isinstance(delta, np.ndarray):
            change = delta[attack, strength][rows]
        else:
            order = np.argsort(rows)
            change = np.empty((len(rows), *delta.shape[3:]), dtype=np.float32)
            change[order] = delta.get_orthogonal_selection((attack, strength, rows[order]))
        return np.clip(benign + change.astype(np.float32), 0.0, 1.0)


__all__ = ["SweepView", "STAGE", "layer_array"]
