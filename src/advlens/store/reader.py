"""Reading an analysis store lazily: arrays load only when indexed, and every read is verified."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from advlens.errors import StoreError
from advlens.store.derived import DerivedResults, stage_stamp
from advlens.store.integrity import READ_ERRORS, VerifiedArray, verify_array
from advlens.store.manifest import CORE_STAGES, STAGES, check_schema, file_digest, read_manifest

# what opening a Zarr group or array whose metadata is missing or damaged raises
_OPEN_ERRORS = (KeyError, *READ_ERRORS, zarr.errors.BaseZarrError)


class StageGroup:
    """The arrays of one finished stage: ``group[name]``, ``name in group``, ``array_keys()``, ``attrs``."""

    def __init__(self, store: AnalysisStore, stage: str) -> None:
        self.store = store
        self.stage = stage
        self._arrays: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"StageGroup({self.stage!r}, arrays={self.array_keys()})"

    @cached_property
    def _group(self) -> zarr.Group:
        try:
            return zarr.open_group(str(self.store.root / self.stage), mode="r")
        except _OPEN_ERRORS as exc:
            raise self.store.damaged(self.stage, None, f"its group metadata is missing or unreadable: {exc}") from exc

    @property
    def _recorded(self) -> dict[str, dict[str, Any]] | None:
        return self.store.manifest["stages"][self.stage].get("arrays")

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    def array_keys(self) -> list[str]:
        recorded = self._recorded
        return sorted(recorded) if recorded is not None else sorted(self._group.array_keys())

    def __contains__(self, name: object) -> bool:
        return name in self.array_keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.array_keys())

    def __getitem__(self, name: str) -> VerifiedArray | zarr.Array:
        if name in self._arrays:
            return self._arrays[name]
        if name not in self:
            raise StoreError(f"the store at {self.store.root} has no array {self.stage}/{name}")
        try:
            array = self._group[name]
        except _OPEN_ERRORS as exc:
            raise self.store.damaged(self.stage, name, f"its metadata is missing or unreadable: {exc}") from exc
        recorded = self._recorded
        if recorded is None:  # schema 1: written without digests or checksums, read as is
            self._arrays[name] = array
            return array
        if list(array.shape) != recorded[name]["shape"]:
            raise self.store.damaged(self.stage, name, f"its shape {tuple(array.shape)} is not the recorded "
                                                       f"{tuple(recorded[name]['shape'])}")
        verified = VerifiedArray(array, f"{self.stage}/{name}",
                                 lambda detail: self.store.damaged(self.stage, name, detail))
        self._arrays[name] = verified
        return verified


class AnalysisStore:
    """A prepared store: the manifest, the model weights and one Zarr group per finished stage.

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
        features (optional; ``advlens.analysis.features.FeatureLibrary`` reads it): for the layers of
            attrs ``layers`` (ordered names; the model graph's activation layers), arrays per layer
            index ``i`` named ``L{i:02d}_…``: ``vis`` (K, c, H, W) float16 feature visualisations in
            [0, 1]; ``vis_activation`` (K,) each channel's spatial-mean activation on its own
            visualisation; ``example_index`` (K, k) int64 dataset indices of the top-k examined images
            (best first), ``example_value`` (K, k) their spatial-max activation, ``example_position``
            (K, k, 2) the peak's (row, column) in the feature map, ``example_window`` (K, k, 4) the
            patch's (top, left, bottom, right) in the image, ``patches`` (K, k, c, h, w) float16 the
            receptive-field crops (absent for a layer whose attrs ``patches`` entry is false);
            ``max_quantiles`` / ``mean_quantiles`` (Q, K) quantiles (attrs ``quantile_levels``) of
            the spatial-max / spatial-mean activation over the examined images, ``max_mean`` (K,)
            the mean of the spatial max. Attrs also hold the settings (``steps``, ``lr``, ``k``,
            ``seed``, …), per layer ``channels``, ``patches``, ``receptive_fields``, ``seconds`` /
            ``cpu_seconds`` (visualisation time) and ``layer_acceptance``; ``examples_seconds``,
            ``acceptance`` (all channels) and ``machine`` (threads, CPUs, load average).
        sweep (optional; the pathways system's strength sweep, ``advlens.pipeline.stages_pathways``): A
            attacks × E strengths × S sampled images; layers i = 0 … L−1 in attrs ``layers``.
            ``sample_index`` (S,) int64 rows of the examined images (index into ``predict``) of a seeded
            sample of at most ``per_class`` benign true positives per class, grouped by class and
            ascending within a class, ``sample_label`` (S,); ``benign_index`` (B,) every benign true
            positive, ``benign_label`` (B,), ``benign_max_L{i:02d}`` (B, C_i) float32 spatial max of
            layer i's channels on the benign image; ``adv_pred`` (A, E, S) int64 prediction of the
            attacked image, ``adv_prob_true`` (A, E, S) float32 softmax probability of the true class,
            ``adv_max_L{i:02d}`` (A, E, S, C_i) float32 spatial maxima on the attacked image,
            ``adv_delta`` (A, E, S, c, H, W) float16 the perturbation x_adv − x (x_adv = clip(x + δ, 0,
            1)), chunked per (attack, strength). Attrs: ``layers``, ``channels``, ``attacks``, ``eps``
            (ascending), ``steps``, ``alpha_ratio``, ``per_class``, ``seed``, ``chunk``,
            ``sample_count`` (per class), ``benign_count``, ``seconds``, ``benign_seconds``,
            ``attack_seconds`` (per attack), ``rows_per_second`` and ``machine``. A class pair's targeted
            sweep (``advlens pathways --targeted``) is kept in ``derived("targeted-sweep")`` with the same
            ``sample_*`` / ``adv_*`` arrays (the original class's sampled images) plus
            ``adv_prob_target``.

    :data:`CORE_STAGES` make a store ``complete``; other stages are optional (:meth:`has_stage`).
    Reads are verified (schema 2): a read that meets a missing or damaged chunk raises
    :class:`StoreError` naming the array and the command that rebuilds its stage.
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
        self._groups: dict[str, StageGroup] = {}
        self._weights: Path | None = None

    def __repr__(self) -> str:
        return f"AnalysisStore({str(self.root)!r}, stages={list(self.manifest['stages'])})"

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def finished_stages(self) -> list[str]:
        """Every finished stage, core and optional, in stage order."""
        return [s for s in STAGES if s in self.manifest["stages"]]

    @property
    def complete(self) -> bool:
        """Whether paper 001's stages (:data:`CORE_STAGES`) are finished; optional stages do not count."""
        return all(s in self.manifest["stages"] for s in CORE_STAGES)

    def has_stage(self, name: str) -> bool:
        """Whether stage ``name`` (core or optional, e.g. ``features``) is finished in this store."""
        return name in self.manifest["stages"]

    @property
    def missing_stages(self) -> list[str]:
        """Stages this store does not hold (core ones first: they are in stage order)."""
        return [s for s in STAGES if s not in self.manifest["stages"]]

    @property
    def verified(self) -> bool:
        """Whether the store recorded digests and checksums (schema 2), so its reads are verified."""
        return all("arrays" in self.manifest["stages"][s] for s in self.finished_stages)

    @property
    def class_names(self) -> list[str]:
        return list(self.config["model"]["class_names"])

    # ------------------------------------------------------------------ errors that say how to repair
    def rebuild_command(self, stage: str | None = None) -> str:
        """The ``advlens prepare`` command that rebuilds ``stage`` (and the stages after it) in place."""
        args = self.manifest.get("command")
        parts = ["advlens", "prepare", *(args if isinstance(args, list) else ["<the options that made it>"]),
                 "--out", str(self.root)]
        return shlex.join(parts + (["--redo", stage] if stage else []))

    def add_stages_command(self, *stages: str) -> str:
        """The ``advlens prepare`` command that adds ``stages`` (and what they need) to this store in place."""
        args = self.manifest.get("command")
        parts = ["advlens", "prepare", *(args if isinstance(args, list) else ["<the options that made it>"]),
                 "--out", str(self.root), "--stages", ",".join(stages)]
        return shlex.join(parts)

    def damaged(self, stage: str, name: str | None, detail: str) -> StoreError:
        """The error for a damaged array (or stage group) of this store."""
        what = f"the array {stage}/{name}" if name else f"the stage {stage}"
        return StoreError(f"{what} of the store at {self.root} is damaged ({detail}); rebuild its stage with "
                          f"`{self.rebuild_command(stage)}`")

    # ------------------------------------------------------------------ arrays
    def group(self, stage: str) -> StageGroup:
        """The arrays of a finished stage."""
        if stage not in self.manifest["stages"]:
            if stage in STAGES and stage not in CORE_STAGES:
                raise StoreError(f"the store at {self.root} has no {stage!r} stage (it is optional); add it with "
                                 f"`{self.add_stages_command(stage)}`")
            raise StoreError(
                f"stage {stage!r} of the store at {self.root} is not finished (finished: "
                f"{', '.join(self.finished_stages) or 'none'}); run `advlens prepare` again to resume it"
            )
        if stage not in self._groups:
            self._groups[stage] = StageGroup(self, stage)
        return self._groups[stage]

    def array(self, stage: str, name: str) -> VerifiedArray | zarr.Array:
        """A lazy array of a stage; index it (``[:]``, ``[i]``, ``[...]``) to load values."""
        return self.group(stage)[name]

    def load(self, stage: str, name: str) -> np.ndarray:
        """Load a whole array into memory."""
        return self.array(stage, name)[...]

    def derived(self, kind: str) -> DerivedResults:
        """The results of ``kind`` computed on demand and kept in this store (see :mod:`advlens.store.derived`)."""
        stamps = {name: stage_stamp(entry) for name, entry in self.manifest["stages"].items()}
        return DerivedResults(self.root, kind, stamps)

    # ------------------------------------------------------------------ weights
    def weights_path(self) -> Path | None:
        """Absolute path of the model weights inside the store, checked against their recorded digest.

        None only for a schema-1 store of a built-in model with its shipped weights; a schema-1 store
        of other weights gives the path it recorded (outside the store).
        """
        recorded = self.manifest.get("weights")
        if not recorded:
            legacy = self.config["model"].get("weights")
            return Path(legacy) if legacy else None
        if self._weights is None:
            path = (self.root / recorded["file"]).resolve()
            if not path.is_file():
                problem = "is missing"
            elif file_digest(path) != recorded["sha256"]:
                problem = "is damaged (its SHA-256 differs from the recorded one)"
            else:
                self._weights = path
                return path
            raise StoreError(f"the model weights {path} of the store {problem}; copy them again with "
                             f"`{self.rebuild_command()}`")
        return self._weights

    # ------------------------------------------------------------------ verification
    def verify(self) -> dict[str, str | None]:
        """Check every array of every finished stage, and the weights, against the digests recorded at write time.

        Returns ``{"stage/name": None or what is wrong}``, plus ``"model.safetensors"`` for the weights.
        Reads every value once (seconds per GB).
        """
        if not self.verified:
            raise StoreError(f"the store at {self.root} was written by advlens "
                             f"{self.manifest.get('advlens_version', '?')} (schema "
                             f"{self.manifest.get('schema_version')}) without digests, so it cannot be verified; "
                             f"re-create it with `advlens prepare ... --out {self.root} --overwrite`")
        results: dict[str, str | None] = {}
        for stage in self.finished_stages:
            recorded = self.manifest["stages"][stage]["arrays"]
            try:
                group = zarr.open_group(str(self.root / stage), mode="r")
            except _OPEN_ERRORS as exc:
                results.update({f"{stage}/{name}": f"the stage's group metadata is unreadable: {exc}"
                                for name in recorded})
                continue
            for name, expected in recorded.items():
                try:
                    array = group[name]
                except _OPEN_ERRORS as exc:
                    results[f"{stage}/{name}"] = f"its metadata is missing or unreadable: {exc}"
                    continue
                results[f"{stage}/{name}"] = verify_array(array, expected)
        weights = self.manifest.get("weights")
        if weights:
            path = self.root / weights["file"]
            results[weights["file"]] = ("missing" if not path.is_file() else
                                        None if file_digest(path) == weights["sha256"] else
                                        "its SHA-256 differs from the recorded one")
        return results

    # ------------------------------------------------------------------ pairs
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
