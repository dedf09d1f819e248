"""The ``profiles`` stage of the activation-profiles system (paper 002 §4.3, §5.2; spec-002 §1.3) and the
fits of other layer selections on its background.

The stage draws a seeded background of benign examined images (``--profiles-background``, default
2,000, all of them when fewer; misclassified images included, since the Flow View colours by the true
or the predicted label), captures the flattened outputs of the profile layers (``--profiles-layers``,
default :func:`advlens.profiles.default_profile_layers`: block outputs + logits) and fits the aligned
1-D UMAP axes (:class:`advlens.profiles.ActivationProfiles`, ``n_neighbors = min(15, n − 1)``). It
stores (group ``profiles``; the contract with :mod:`advlens.analysis.profiles`):

* attrs ``layers``, ``dims`` (flattened values per image of each layer), the fit's settings
  (``n_neighbors``, ``min_dist``, ``alignment_regularisation``, ``alignment_window_size``,
  ``random_state``, ``n_epochs``), ``background`` (n), ``requested_background``, ``fit_seconds``,
  ``warmup_seconds``, ``activation_seconds``, ``machine``;
* ``background_row`` (n,) int64 rows of the ``predict`` stage; ``background_label`` /
  ``background_pred`` (n,) int64; ``background_images`` (n, c, h, w) float32 pixels in [0, 1] (the
  activations are not stored: 2,000 × 56k floats would take 450 MB, one capture recomputes them);
  ``embeddings`` (L, n) float32 aligned positions (NaN: disconnected on that axis). Refits are not
  reproducible bit for bit (spec-002 §5), so the stored fit is the reference.

The stage keeps no checkpoints: the capture takes seconds, and the aligned fit (the long part) is one
call of umap-learn that cannot be resumed half-way. An interrupted ``prepare`` runs the stage again
from the start; the stages before it are kept.

A new layer selection (the app's Architecture View) is fitted on the same background images with the
same settings by :func:`fit_profiles_selection` and kept in ``store.derived("profiles-fit")``, keyed by
the layers and settings and stale once the ``profiles`` stage is redone;
:func:`stored_profiles_selection` reads it back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from advlens.errors import ConfigError, ModelError, StoreError
from advlens.models import AnalysedModel
from advlens.models.graph import ModelGraph
from advlens.pipeline.config import PrepareConfig
from advlens.pipeline.stage import Stage, StageContext
from advlens.profiles import ActivationProfiles, default_profile_layers
from advlens.profiles.aligned import warm_up
from advlens.store import AnalysisStore, StageWriter

logger = logging.getLogger(__name__)

STAGE = "profiles"
FIT_KIND = "profiles-fit"
"""The ``store.derived`` kind of the fits of other layer selections."""
MAX_NEIGHBOURS = 15
FIT_PARAMS = ("n_neighbors", "min_dist", "alignment_regularisation", "alignment_window_size", "random_state",
              "n_epochs")
"""The stage attrs that are the constructor settings of :class:`ActivationProfiles` (the fit and the placement
of new images)."""
CAPTURE_BATCH = 256

Progress = Callable[[float, str], None]


def check_profile_layers(graph: ModelGraph, layers: Sequence[str], what: str = "layers") -> list[str]:
    """``layers`` as layer names of ``graph`` (aliases resolved), refusing unknown names and selections that
    are not sequential (each layer must feed the next one, in the order given: spec-002 G-23).

    Raises:
        ConfigError: naming the problem and the valid choices (the default selection).
    """
    layers = list(layers)
    default = ",".join(default_profile_layers(graph))
    if not layers:
        raise ConfigError(f"{what}: no layers given; the default selection is {default}")
    names = []
    for name in layers:
        try:
            names.append(graph.resolve(name))
        except ModelError as exc:
            raise ConfigError(f"{what}: {exc}; the default selection is {default}") from None
    problem = graph.sequential_problem(names)
    if problem:
        raise ConfigError(f"{what}: the selection {','.join(layers)} is not sequential: {problem}; list layers "
                          f"in execution order on one path, e.g. the default {default}")
    return names


def profile_params(n: int, seed: int) -> dict[str, Any]:
    """The :class:`ActivationProfiles` settings of a background of ``n`` images (spec-002 G-1, G-2, G-26)."""
    profiles = ActivationProfiles(n_neighbors=min(MAX_NEIGHBOURS, n - 1), random_state=seed)
    return {name: getattr(profiles, name) for name in FIT_PARAMS}


def sample_background(count: int, size: int, seed: int) -> np.ndarray:
    """``size`` of ``count`` examined rows drawn without replacement (seeded), ascending; all when fewer.

    Shape: returns (min(size, count),) int64.
    """
    if size >= count:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False)).astype(np.int64)


def flattened_activations(model: AnalysedModel, images: torch.Tensor, layers: Sequence[str],
                          batch_size: int = CAPTURE_BATCH) -> list[np.ndarray]:
    """Each layer's output for every image, flattened per image (no pooling, no scaling: G-3, G-5).

    Shape: images (n, c, h, w) in [0, 1]; returns L × (n, D_i) float32.
    """
    captured: dict[str, np.ndarray] = {}
    with tqdm(total=len(images), desc="profiles: activations", unit="img") as bar:
        for start in range(0, len(images), batch_size):
            part = model.capture(images[start:start + batch_size], list(layers), reduce="none")
            for name, value in part.items():
                captured.setdefault(name, []).append(value.reshape(len(value), -1).float().numpy())
            bar.update(len(images[start:start + batch_size]))
    return [np.ascontiguousarray(np.concatenate(captured[name]), dtype=np.float32) for name in layers]


def fit_background(model: AnalysedModel, images: torch.Tensor, layers: Sequence[str], params: dict[str, Any],
                   progress: Progress | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """The aligned fit of ``layers`` on ``images``: capture, JIT warm-up, fit, each phase with a progress
    bar and reported as ``progress(fraction, message)``.

    Returns the embeddings and the seconds of each phase (``activation_seconds``, ``warmup_seconds``,
    ``fit_seconds``). Shape: images (n, c, h, w); returns (L, n) float32.
    """
    report = progress or (lambda fraction, message: None)
    seconds = {}
    report(0.0, f"activations of {len(layers)} layers for {len(images)} images")
    started = time.perf_counter()
    background = flattened_activations(model, images, layers)
    seconds["activation_seconds"] = time.perf_counter() - started
    report(0.1, "compiling UMAP's numba code (JIT warm-up)")
    started = time.perf_counter()
    with tqdm(total=1, desc="profiles: JIT warm-up", unit="step") as bar:
        warm_up()
        bar.update(1)
    seconds["warmup_seconds"] = time.perf_counter() - started
    report(0.2, "aligned UMAP fit")
    started = time.perf_counter()
    with tqdm(desc="profiles: fit", unit="step") as bar:
        def step(done: int, total: int, what: str) -> None:
            bar.total = total
            bar.update(done - bar.n)
            bar.set_postfix_str(what)
            report(0.2 + 0.8 * done / total, what)

        fitted = ActivationProfiles(**params).fit(background, progress=step)
    seconds["fit_seconds"] = time.perf_counter() - started
    return np.ascontiguousarray(fitted.embeddings_.T, dtype=np.float32), seconds


def _machine() -> dict[str, Any]:
    return {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "numba_threads": _numba_threads(), "load_average": round(os.getloadavg()[0], 2)}


def _numba_threads() -> int | None:
    try:
        import numba  # noqa: PLC0415
    except ImportError:
        return None
    return int(numba.get_num_threads())


def run_profiles(ctx: StageContext, out: StageWriter) -> dict:
    """A seeded background, its flattened activations of the profile layers, and their aligned 1-D fit."""
    predict = ctx.store().group("predict")
    examined = predict.attrs.get("examined")
    if examined != len(ctx.data):
        raise StoreError(f"the store's predict stage examined {examined} images but prepare was given "
                         f"{len(ctx.data)}; prepare the store again with the same dataset and --limit")
    config = ctx.config
    model = ctx.model
    layers = (check_profile_layers(model.graph, config.profiles_layers, "--profiles-layers")
              if config.profiles_layers is not None else default_profile_layers(model.graph))
    rows = sample_background(len(ctx.data), config.profiles_background, config.seed)
    if len(rows) < 3:
        raise ConfigError(f"the profiles stage needs at least 3 background images, but the store examines "
                          f"{len(rows)}; examine more images (--limit)")
    params = profile_params(len(rows), config.seed)
    images = ctx.data.images[torch.from_numpy(rows)].float()
    dims = [int(np.prod(model.graph[name].shape)) for name in layers]
    logger.info("profiles: %d background images × %d layers (%s values per image), n_neighbors %d", len(rows),
                len(layers), "/".join(map(str, dims)), params["n_neighbors"])
    machine = _machine()
    embeddings, seconds = fit_background(model, images, layers, params)
    out.array("background_row", rows)
    out.array("background_label", predict["label"][:][rows].astype(np.int64))
    out.array("background_pred", predict["pred"][:][rows].astype(np.int64))
    out.array("background_images", images.numpy().astype(np.float32), chunks=(256, *images.shape[1:]))
    out.array("embeddings", embeddings, chunks=embeddings.shape)
    disconnected = np.isnan(embeddings).sum(axis=1).astype(int).tolist()
    out.attrs(layers=list(layers), dims=dims, background=len(rows), requested_background=config.profiles_background,
              **params, **{name: round(value, 3) for name, value in seconds.items()},
              disconnected=disconnected, machine=machine)
    total = sum(seconds.values())
    logger.info("profiles: fitted in %.1f s (activations %.1f s, JIT warm-up %.1f s, fit %.1f s); disconnected "
                "per layer %s", total, seconds["activation_seconds"], seconds["warmup_seconds"],
                seconds["fit_seconds"], disconnected)
    return {"seconds": total}


def outdated(attrs: dict[str, Any], config: PrepareConfig) -> str | None:
    """How the recorded settings of a finished profiles stage differ from those ``config`` asks for, or None.

    The default layer list (``profiles_layers`` None) is the model's, which the stage recorded: it is not
    compared.
    """
    differences = []
    if attrs.get("requested_background") != config.profiles_background:
        differences.append(f"a background of {attrs.get('requested_background')} images, not "
                           f"{config.profiles_background}")
    if config.profiles_layers is not None and list(attrs.get("layers", [])) != list(config.profiles_layers):
        differences.append(f"the layers {','.join(attrs.get('layers', []))}, not {','.join(config.profiles_layers)}")
    return "; ".join(differences) or None


# ---------------------------------------------------------------------- fits of other layer selections

def _stage_attrs(store: AnalysisStore) -> dict[str, Any]:
    if not store.has_stage(STAGE):
        raise StoreError(f"the store at {store.root} has no profiles stage, whose background the fit uses; add it "
                         f"with `{store.add_stages_command(STAGE)}`")
    return dict(store.group(STAGE).attrs)


def selection_key(attrs: dict[str, Any], layers: Sequence[str]) -> dict[str, Any]:
    """The derived-result key of a selection's fit: its layers, the background size and the fit's settings."""
    return {"layers": list(layers), "background": int(attrs["background"]),
            **{name: attrs[name] for name in FIT_PARAMS if name in attrs}}


def stored_profiles_selection(store: AnalysisStore, layers: Sequence[str]) -> np.ndarray | None:
    """The kept aligned fit of ``layers`` on the stage's background: the stage's own embeddings for the
    stage's layers, a kept :func:`fit_profiles_selection` result, or None (not fitted yet, or fitted before
    the stage was redone). Shape: (L, n) float32."""
    attrs = _stage_attrs(store)
    if list(layers) == list(attrs["layers"]):
        return np.asarray(store.group(STAGE)["embeddings"][...], dtype=np.float32)
    found = store.derived(FIT_KIND).get(selection_key(attrs, layers), depends_on=[STAGE])
    return None if found is None else found.arrays["embeddings"]


def fit_profiles_selection(store: AnalysisStore, model: AnalysedModel, layers: Sequence[str], *,
                           progress: Progress | None = None) -> np.ndarray:
    """Fit the aligned axes of another layer selection on the stage's background images, with the stage's
    settings, and keep the fit in ``store.derived("profiles-fit")`` (returned as it is when already kept).

    Args:
        layers: a sequential selection of ``model``'s layers (aliases resolved).
        progress: called as ``progress(fraction, message)`` per phase (activations, JIT warm-up, fit).

    Raises:
        ConfigError: an unknown layer or a selection that is not sequential (before any work).
        StoreError: the store has no profiles stage.

    Shape: returns (L, n) float32.
    """
    attrs = _stage_attrs(store)
    layers = check_profile_layers(model.graph, layers)
    found = stored_profiles_selection(store, layers)
    if found is not None:
        if progress is not None:
            progress(1.0, "fit read from the store")
        return found
    params = {name: attrs[name] for name in FIT_PARAMS if name in attrs}
    images = torch.from_numpy(np.asarray(store.group(STAGE)["background_images"][...], dtype=np.float32))
    embeddings, seconds = fit_background(model, images, layers, params, progress)
    dims = [int(np.prod(model.graph[name].shape)) for name in layers]
    store.derived(FIT_KIND).put(selection_key(attrs, layers), {"embeddings": embeddings},
                                {"layers": list(layers), "dims": dims,
                                 **{name: round(value, 3) for name, value in seconds.items()},
                                 "machine": _machine()}, depends_on=[STAGE])
    if progress is not None:
        progress(1.0, "fit kept in the store")
    return embeddings


STAGES = (
    Stage(STAGE, ("predict",), run_profiles,
          "activation profiles: a seeded background's aligned 1-D UMAP positions on every profile layer "
          "(block outputs + logits)", outdated=outdated),
)
"""The profiles family: one stage. It reads ``predict`` (the labels and predictions of its background)."""
