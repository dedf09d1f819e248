"""The ``sweep`` stage of the pathways system (spec-004 §1–§2) and the targeted sweep of one class pair.

Over a seeded per-class sample of the benign true positives (``predict``'s ``true_positive`` rows,
at most ``per_class`` per class) it attacks every image with untargeted L∞ PGD (κ steps, α = ε/4, no
random start) and FGSM at every strength ε, and stores per attack, strength and image the prediction,
the true class's probability, the per-channel spatial maximum of every pathway layer and the
perturbation (:func:`advlens.pipeline.sweep.attack_strengths`). It also stores the benign maxima of the
same layers for every benign true positive. The layout is documented in
:class:`advlens.store.AnalysisStore`.

The stage resumes per part: the benign pass and each (attack, chunk of images) part — all strengths
of a chunk run as one batch — are checkpointed in the stage's work folder (named after the settings),
so a killed run redoes at most the parts in flight. The (attack, chunk) parts run on the configured executor
(``--executor local|ray``, :mod:`advlens.pipeline.executor`); the benign pass (one forward pass per true
positive, well under 1 % of the stage's work) runs in the driver.

:func:`targeted_sweep` runs Bluff's own setting for one class pair on demand — targeted PGD and FGSM
toward the target over the sampled images of the original class — and keeps it in
``store.derived("targeted-sweep")`` (CLI: ``advlens pathways STORE --original C --target C --targeted``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from advlens.errors import StoreError
from advlens.models import AnalysedModel
from advlens.pathways import default_pathway_layers
from advlens.pipeline.config import PrepareConfig
from advlens.pipeline.executor import run_sharded, shards
from advlens.pipeline.stage import Stage, StageContext, load_checkpoint, save_checkpoint
from advlens.pipeline.sweep import (DEFAULT_ALPHA_RATIO, assemble, attack_strengths,
                                   benign_maxima, check_sweep, gradient_models, resolve_precision)
from advlens.store import AnalysisStore, StageWriter
from advlens.store.derived import DerivedResult

logger = logging.getLogger(__name__)

TARGETED_KIND = "targeted-sweep"
"""The ``store.derived`` kind of a class pair's targeted sweep."""


@dataclass(frozen=True)
class SweepSettings:
    """The settings of the ``sweep`` stage, recorded in its attrs (not part of the store's identity).

    Attributes:
        eps: the strengths ε, ascending.
        attacks: the attacks (``pgd``, ``fgsm``), in the order of the stored arrays' first axis.
        steps: PGD iterations κ; alpha_ratio: PGD's step size α as a fraction of ε.
        per_class: at most this many benign true positives of each class are attacked.
        seed: the seed of the per-class sample (the store's seed).
        chunk: images per part (all strengths of a part run in one batch of ``chunk × len(eps)`` rows).
        precision: the number format of PGD's gradient passes, resolved for the run's device (``bfloat16`` or
            ``float32``, :func:`advlens.pipeline.sweep.resolve_precision`); FGSM's are float32
            (:func:`advlens.pipeline.sweep.attack_precision`); predictions and maxima always come from a float32
            forward of the model.
    """

    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    steps: int
    per_class: int
    seed: int
    alpha_ratio: float = DEFAULT_ALPHA_RATIO
    chunk: int = 21
    precision: str = "float32"

    @classmethod
    def for_run(cls, config: PrepareConfig) -> SweepSettings:
        eps = tuple(sorted(float(e) for e in config.sweep_eps))
        # PrepareConfig.sweep_precision (``--sweep-precision``) where the configuration has it
        precision = resolve_precision(config.sweep_precision,
                                      config.device or "cpu")
        return cls(eps=eps, attacks=tuple(config.sweep_attacks), steps=config.sweep_steps,
                   per_class=config.sweep_per_class, seed=config.seed, chunk=max(1, config.batch_size // len(eps)),
                   precision=precision)

    def as_attrs(self) -> dict[str, Any]:
        values = asdict(self)
        values["eps"], values["attacks"] = list(self.eps), list(self.attacks)
        return values


def sweep_layers(model: AnalysedModel) -> list[str]:
    """The pathway layers, :func:`advlens.pathways.default_pathway_layers` (the demo model: 9 layers, 992
    channels)."""
    return default_pathway_layers(model.graph)


def sample_true_positives(labels: np.ndarray, true_positive: np.ndarray, per_class: int, seed: int,
                          classes: int) -> np.ndarray:
    """A seeded sample of at most ``per_class`` true positives of each class: rows grouped by class (class 0
    first), ascending within a class. Each class draws from its own generator (``seed``, class), so one
    class's sample does not depend on the others.

    Shape:
        labels, true_positive: (M,); returns (S,) int64 rows.
    """
    picked = []
    for c in range(classes):
        rows = np.flatnonzero(true_positive & (labels == c))
        if len(rows) > per_class:
            rows = np.sort(np.random.default_rng([seed, c]).choice(rows, per_class, replace=False))
        picked.append(rows)
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)


def _clock() -> np.ndarray:
    """(wall, CPU) seconds now: subtract two to time a part."""
    return np.array([time.perf_counter(), time.process_time()])


def _benign_part(model: AnalysedModel, layers: list[str], images: torch.Tensor, batch_size: int,
                 work: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The benign maxima of every layer (checkpointed in ``work``) and the (wall, CPU) seconds they took."""
    stored = load_checkpoint(work / "benign.npz")
    if stored is None:
        started = _clock()
        maxima = benign_maxima(model, images, layers, batch_size)
        stored = {**{f"L{i:02d}": values for i, values in enumerate(maxima)}, "seconds": _clock() - started}
        save_checkpoint(work / "benign.npz", **stored)
    else:
        logger.info("sweep: benign maxima from the checkpoint of an interrupted run")
    return [stored[f"L{i:02d}"] for i in range(len(layers))], stored["seconds"]


class SweepShared:
    """What every (attack, chunk) part of one attack needs: the model, the layers, the settings and the attack.

    The gradient model (:func:`advlens.pipeline.sweep.gradient_models`, a ``torch.fx`` module, which does not
    pickle) is built on first use in the process that runs the part and left out when the record is pickled
    for a Ray worker, which builds its own: the same deterministic copy of the same weights.
    """

    def __init__(self, model: AnalysedModel, layers: list[str], settings: SweepSettings, attack: str) -> None:
        self.model, self.layers, self.settings, self.attack = model, layers, settings, attack
        self._gradients: torch.nn.Module | None = None

    @property
    def gradients(self) -> torch.nn.Module:
        if self._gradients is None:
            self._gradients = gradient_models(self.model, [self.attack], self.settings.precision)[self.attack]
        return self._gradients

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_gradients": None}


def _sweep_shard(shared: SweepShared, part: slice, inputs: tuple[torch.Tensor, torch.Tensor]
                 ) -> dict[str, np.ndarray]:
    """One (attack, chunk) part of the sweep (an executor task): every strength of the chunk's images in one
    batch (:func:`advlens.pipeline.sweep.attack_strengths`), with the (wall, CPU) seconds it took.

    Shape:
        inputs: the chunk's images (n, c, H, W) in [0, 1] and labels (n,) int64.
    """
    images, labels = inputs
    settings = shared.settings
    began = _clock()
    stored = attack_strengths(shared.model, images, labels, shared.layers, settings.eps, shared.attack,
                              settings.steps, settings.alpha_ratio, gradients=shared.gradients)
    stored["seconds"] = _clock() - began
    return stored


def _attack_parts(ctx: StageContext, layers: list[str], images: torch.Tensor, labels: torch.Tensor,
                  settings: SweepSettings, work: Path
                  ) -> tuple[dict[str, list[list[np.ndarray]]], dict[str, np.ndarray]]:
    """Every (attack, chunk) part, computed on the run's executor or taken from its checkpoint
    (``work/{attack}_{start:08d}.npz``): ``parts[name][attack][chunk]`` and the (wall, CPU) seconds per attack,
    summed over the parts (on Ray: the workers' seconds, not the run's wall time)."""
    parts: dict[str, list[list[np.ndarray]]] = {}
    seconds: dict[str, np.ndarray] = {}
    chunks = shards(len(images), settings.chunk)

    def inputs(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return images[part], labels[part]
    for a, attack in enumerate(settings.attacks):
        seconds[attack] = np.zeros(2)
        shared = SweepShared(ctx.model, layers, settings, attack)
        for _, stored in run_sharded(ctx.executor, _sweep_shard, shared, chunks, work,
                                     f"sweep {attack} ({len(settings.eps)} strengths per image)", inputs=inputs,
                                     prefix=f"{attack}_"):
            seconds[attack] += stored.pop("seconds")
            for name, values in stored.items():
                parts.setdefault(name, [[] for _ in settings.attacks])[a].append(values)
    return parts, seconds


def run_sweep(ctx: StageContext, out: StageWriter) -> dict:
    """Untargeted PGD and FGSM at every strength over a per-class sample of the benign true positives."""
    predict = ctx.store().group("predict")
    examined = predict.attrs.get("examined")
    if examined != len(ctx.data):
        raise StoreError(f"the store's predict stage examined {examined} images but prepare was given "
                         f"{len(ctx.data)}; prepare the store again with the same dataset and --limit")
    model = ctx.model
    settings = SweepSettings.for_run(ctx.config)
    check_sweep(settings.eps, settings.attacks, settings.steps, settings.alpha_ratio)
    labels = predict["label"][:].astype(np.int64)
    true_positive = predict["true_positive"][:].astype(bool)
    classes = model.num_classes
    sample = sample_true_positives(labels, true_positive, settings.per_class, settings.seed, classes)
    benign_rows = np.flatnonzero(true_positive).astype(np.int64)
    layers = sweep_layers(model)
    channels = [model.graph[layer].channels for layer in layers]
    work = ctx.work_dir("sweep", key={**settings.as_attrs(), "layers": layers})
    machine = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "load_average": round(os.getloadavg()[0], 2),
               "executor": ctx.executor.name if ctx.executor is not None else "local"}  # ray: seconds are the tasks'
    logger.info("sweep: %d sampled images (≤ %d per class) × %d strengths × %s; benign maxima of %d true "
                "positives over %d layers", len(sample), settings.per_class, len(settings.eps),
                "/".join(settings.attacks), len(benign_rows), len(layers))
    images = ctx.data.images
    benign, benign_seconds = _benign_part(model, layers, images[torch.from_numpy(benign_rows)], ctx.config.batch_size,
                                          work)
    sampled = images[torch.from_numpy(sample)]
    parts, seconds = _attack_parts(ctx, layers, sampled, torch.from_numpy(labels[sample]), settings, work)
    arrays = assemble(parts, model, sampled, layers, len(settings.attacks), len(settings.eps), targeted=False)
    write_sweep_arrays(out, arrays, sample, labels[sample])
    out.array("benign_index", benign_rows)
    out.array("benign_label", labels[benign_rows])
    for i, values in enumerate(benign):
        out.array(f"benign_max_L{i:02d}", values.astype(np.float32))
    wall, cpu = benign_seconds + sum(seconds.values(), np.zeros(2))
    rows = len(sample) * len(settings.eps) * len(settings.attacks)
    out.attrs(layers=layers, channels=channels, **settings.as_attrs(),
              sample_count=np.bincount(labels[sample], minlength=classes).astype(int).tolist(),
              benign_count=len(benign_rows), seconds=round(float(wall), 3), cpu_seconds=round(float(cpu), 3),
              benign_seconds=round(float(benign_seconds[0]), 3), benign_cpu_seconds=round(float(benign_seconds[1]), 3),
              attack_seconds={name: round(float(value[0]), 3) for name, value in seconds.items()},
              attack_cpu_seconds={name: round(float(value[1]), 3) for name, value in seconds.items()},
              rows_per_second=round(rows / wall, 2) if wall > 0 else None, machine=machine)
    success = {attack: [float((arrays["adv_pred"][a, e] != labels[sample]).mean()) if len(sample) else 0.0
                        for e in range(len(settings.eps))] for a, attack in enumerate(settings.attacks)}
    logger.info("sweep: %d rows in %.1f s (CPU %.1f s); success rate per strength %s", rows, wall, cpu, success)
    return {"seconds": float(wall)}


def write_sweep_arrays(out: StageWriter, arrays: dict[str, np.ndarray], sample: np.ndarray,
                       labels: np.ndarray) -> None:
    """The sampled rows and the (attack, strength, image) arrays, chunked per (attack, strength)."""
    out.array("sample_index", sample.astype(np.int64))
    out.array("sample_label", labels.astype(np.int64))
    for name, values in arrays.items():
        chunks = (1, 1, *values.shape[2:]) if name.startswith(("adv_max_", "adv_delta")) else None
        out.array(name, values, chunks=chunks)


def outdated(attrs: dict[str, Any], config: PrepareConfig) -> str | None:
    """How the recorded settings of a finished sweep differ from those ``config`` asks for, or None."""
    asked = SweepSettings.for_run(config)
    differences = []
    if [float(e) for e in attrs.get("eps", [])] != list(asked.eps):
        differences.append(f"strengths {attrs.get('eps')}, not {list(asked.eps)}")
    if list(attrs.get("attacks", [])) != list(asked.attacks):
        differences.append(f"attacks {attrs.get('attacks')}, not {list(asked.attacks)}")
    if attrs.get("steps") != asked.steps:
        differences.append(f"{attrs.get('steps')} PGD steps, not {asked.steps}")
    if attrs.get("per_class") != asked.per_class:
        differences.append(f"at most {attrs.get('per_class')} images per class, not {asked.per_class}")
    if attrs.get("precision", "float32") != asked.precision:  # sweeps before the option ran in float32
        differences.append(f"{attrs.get('precision', 'float32')} gradients, not {asked.precision}")
    return "; ".join(differences) or None


# ---------------------------------------------------------------------- the targeted sweep of one pair

def targeted_key(store: AnalysisStore, original: int, target: int) -> dict[str, Any]:
    """The derived-result key of a class pair's targeted sweep: the pair and the sweep's settings."""
    attrs = store.group("sweep").attrs
    return {"original": int(original), "target": int(target), "eps": list(attrs["eps"]),
            "attacks": list(attrs["attacks"]), "steps": int(attrs["steps"]), "alpha_ratio": attrs["alpha_ratio"],
            "layers": list(attrs["layers"]), "precision": attrs.get("precision", "float32")}


def _sampled_images(store: AnalysisStore, rows: np.ndarray) -> torch.Tensor:
    """The benign images of examined rows (true positives) from the ``attack`` stage. Shape: (n, c, H, W)."""
    if not store.has_stage("attack"):
        raise StoreError(f"the store at {store.root} has no finished attack stage, which holds the benign images; "
                         "run the same `advlens prepare` again to finish it")
    group = store.group("attack")
    index = group["dataset_index"][:]
    found = np.searchsorted(index, rows)
    if len(rows) and (found.max() >= len(index) or not np.array_equal(index[found], rows)):
        raise StoreError(f"the sweep's sampled images are not among the attack stage's true positives in the store "
                         f"at {store.root}; redo the sweep with `{store.rebuild_command('sweep')}`")
    return torch.from_numpy(group["benign"].get_orthogonal_selection((found,)) if len(rows) else
                            np.zeros((0, *group["benign"].shape[1:]), np.float32))


def targeted_sweep(store: AnalysisStore, model: AnalysedModel, original: int, target: int, chunk: int = 21,
                   recompute: bool = False) -> tuple[DerivedResult, bool]:
    """Bluff's setting for one class pair: targeted PGD and FGSM toward ``target`` at the sweep's strengths over
    the sweep's sampled images of class ``original``, kept in ``store.derived("targeted-sweep")``.

    Returns the result (arrays as in the stage, without the benign ones, plus ``adv_prob_target``) and
    whether it was computed now (False: read from the store).

    Shape:
        ``sample_index`` / ``sample_label`` (S_o,); ``adv_pred``, ``adv_prob_true``, ``adv_prob_target``
        (A, E, S_o); ``adv_max_L{i:02d}`` (A, E, S_o, C_i); ``adv_delta`` (A, E, S_o, c, H, W) float16.
    """
    if not store.has_stage("sweep"):
        raise StoreError(f"the store at {store.root} has no sweep stage, which the targeted sweep builds on; add it "
                         f"with `{store.add_stages_command('sweep')}`")
    classes = len(store.class_names)
    for what, value in (("original", original), ("target", target)):
        if not 0 <= int(value) < classes:
            raise StoreError(f"the {what} class {value} is not a class of the store (0..{classes - 1})")
    results = store.derived(TARGETED_KIND)
    key = targeted_key(store, original, target)
    depends_on = ["predict", "sweep"]
    if not recompute:
        found = results.get(key, depends_on)
        if found is not None:
            return found, False
    group = store.group("sweep")
    attrs = group.attrs
    if list(attrs["layers"]) != sweep_layers(model):
        raise StoreError(f"the sweep of the store at {store.root} covers the layers {attrs['layers']}, not the "
                         f"model's pathway layers; redo it with `{store.rebuild_command('sweep')}`")
    rows = group["sample_index"][:][group["sample_label"][:] == original]
    images = _sampled_images(store, rows)
    labels = torch.full((len(rows),), int(original), dtype=torch.int64)
    targets = torch.full_like(labels, int(target))
    eps, attacks = list(attrs["eps"]), list(attrs["attacks"])
    layers = list(attrs["layers"])
    parts: dict[str, list[list[np.ndarray]]] = {}
    seconds: dict[str, float] = {}
    gradients = gradient_models(model, attacks, key["precision"])
    with tqdm(total=len(rows) * len(eps) * len(attacks), desc=f"targeted sweep {original}→{target}",
              unit="img×ε") as bar:
        for a, attack in enumerate(attacks):
            began = time.perf_counter()
            for start in range(0, len(rows), chunk):
                part = slice(start, start + chunk)
                found = attack_strengths(model, images[part], labels[part], layers, eps, attack, int(attrs["steps"]),
                                         float(attrs["alpha_ratio"]), targets[part], gradients[attack])
                for name, values in found.items():
                    parts.setdefault(name, [[] for _ in attacks])[a].append(values)
                bar.update(len(images[part]) * len(eps))
            seconds[attack] = round(time.perf_counter() - began, 3)
    arrays = assemble(parts, model, images, layers, len(attacks), len(eps), targeted=True)
    arrays["sample_index"] = rows.astype(np.int64)
    arrays["sample_label"] = np.full(len(rows), int(original), np.int64)
    hit = {attack: [float((arrays["adv_pred"][a, e] == target).mean()) if len(rows) else 0.0
                    for e in range(len(eps))] for a, attack in enumerate(attacks)}
    result_attrs = {**key, "images": int(len(rows)), "attack_seconds": seconds, "target_rate": hit,
                    "targeted": True}
    results.put(key, arrays, result_attrs, depends_on)
    return DerivedResult(arrays, result_attrs), True


STAGES = (
    Stage("sweep", ("predict",), run_sweep,
          "strength sweep: untargeted PGD and FGSM at several ε over a per-class sample of the true positives, "
          "with the per-channel maxima of every pathway layer (and their benign maxima)", outdated=outdated),
)
"""The pathways family: one stage. It reads ``predict`` (the true positives it samples)."""
