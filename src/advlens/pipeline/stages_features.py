"""The ``features`` stage: what every channel of the model's activation layers responds to.

For each spatial layer of ``model.graph.activation_layers()`` (the demo model: 9 layers, 992
channels) it stores, per channel:

* a feature visualisation (:func:`advlens.features.feature_visualization`, seeded by the store's
  seed) and the channel's spatial-mean activation on it;
* the top-k dataset examples over the examined images (:func:`advlens.features.dataset_examples_for_layers`,
  one streaming pass for all layers) with their receptive-field patches;
* statistics of the channel over the examined images, gathered during that same pass: quantiles of
  its spatial-max and spatial-mean activation and the mean of its spatial max.

A visualisation is *accepted* (issue 8 / spec-002 A15) when its activation exceeds the channel's
95th percentile of spatial-mean activations over the examined images; the stored arrays hold both
sides, and the attrs the rate per layer. The layout is documented in :class:`advlens.store.AnalysisStore`.

The stage resumes per part: the data pass and each layer's visualisations are checkpointed in the
stage's work folder (named after the settings), so a killed run redoes at most one layer.
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

from advlens.errors import ModelError, StoreError
from advlens.features import crop_patches, dataset_examples_for_layers, feature_visualization
from advlens.features.patches import patch_shape
from advlens.models import AnalysedModel
from advlens.pipeline.config import DEFAULT_FEATURE_STEPS, PrepareConfig
from advlens.pipeline.stage import Stage, StageContext, load_checkpoint, save_checkpoint
from advlens.store import StageWriter

logger = logging.getLogger(__name__)

QUANTILE_LEVELS = (0.5, 0.9, 0.95, 0.99)
ACCEPTANCE_LEVEL = 0.95
PATCH_BYTES_PER_LAYER = 256 * 2**20
"""Patches of a layer are stored (float16) only up to this size; the demo model's largest layer takes 4 MB."""
CHUNK_CHANNELS = 32  # channels per chunk of the image arrays: a channel is read without its whole layer


@dataclass(frozen=True)
class FeatureSettings:
    """The settings of the ``features`` stage, recorded in its attrs (not part of the store's identity).

    Attributes:
        steps, lr: feature-visualisation Adam steps and learning rate (32 and 0.1 meet the demo model's
            acceptance and time goals: benchmarks/features.py).
        seed: feature-visualisation seed (the store's seed).
        k: dataset examples per channel (at most the number of examined images).
        batch_size: images per forward pass of the data pass.
        channel_batch: channels optimised together in one feature-visualisation call.
        quantile_levels: the stored quantiles; ``acceptance_level`` must be one of them.
    """

    steps: int = DEFAULT_FEATURE_STEPS
    lr: float = 0.1
    seed: int = 0
    k: int = 10
    batch_size: int = 128
    channel_batch: int = 256
    quantile_levels: tuple[float, ...] = QUANTILE_LEVELS
    acceptance_level: float = ACCEPTANCE_LEVEL

    @classmethod
    def for_run(cls, config: PrepareConfig, images: int) -> FeatureSettings:
        return cls(steps=config.feature_steps, seed=config.seed, k=min(cls.k, images),
                   batch_size=config.batch_size)

    def as_attrs(self) -> dict[str, Any]:
        values = asdict(self)
        values["quantile_levels"] = list(self.quantile_levels)
        return values


def feature_layers(model: AnalysedModel) -> list[str]:
    """The layers the stage covers: the spatial layers of ``model.graph.activation_layers()`` whose receptive
    field is known (the patches need it; the others are logged and left out)."""
    graph = model.graph
    layers = []
    for layer in graph.activation_layers():
        if not graph[layer].spatial:
            continue
        try:
            graph.receptive_field(layer)
        except ModelError as exc:
            logger.warning("features: layer %s left out: %s", layer, exc)
            continue
        layers.append(layer)
    return layers


def examples_and_statistics(model: AnalysedModel, layers: list[str], images: torch.Tensor,
                            settings: FeatureSettings) -> dict[str, np.ndarray]:
    """Top-k dataset examples of every channel and its activation statistics, from one pass over ``images``.

    The examples come from :func:`~advlens.features.dataset_examples_for_layers` (without patches:
    they are cropped per layer when written). The statistics are gathered in the same forward
    passes: ``model.tapping`` also hands each batch's layer outputs to this function, which reduces
    them after every batch (the examples' ``progress`` callback runs right after each forward pass).

    Shape:
        images: (N, C, H, W) in [0, 1]. Returns flat arrays per layer index i: ``L{i:02d}_example_index``
        / ``_example_value`` (K, k), ``_example_position`` (K, k, 2), ``_example_window`` (K, k, 4),
        ``_max_quantiles`` / ``_mean_quantiles`` (Q, K), ``_max_mean`` (K,).
    """
    count = len(images)
    maxima = {layer: np.empty((count, model.graph[layer].channels), np.float32) for layer in layers}
    means = {layer: np.empty_like(maxima[layer]) for layer in layers}
    done = [0]
    bar = tqdm(total=count, desc="features: examples", unit="img")
    with model.tapping(layers) as outputs:
        def reduce_batch(seen: int) -> None:
            rows = slice(done[0], seen)
            for layer in layers:
                value = outputs[layer].detach().float().flatten(2)
                maxima[layer][rows] = value.amax(dim=2).cpu().numpy()
                means[layer][rows] = value.mean(dim=2).cpu().numpy()
            bar.update(seen - done[0])
            done[0] = seen

        try:
            examples = dataset_examples_for_layers(model, layers, images, k=settings.k,
                                                   batch_size=settings.batch_size, patches=False,
                                                   progress=reduce_batch)
        finally:
            bar.close()
    if done[0] != count:
        raise RuntimeError(f"the data pass reduced {done[0]} of {count} images")
    levels = list(settings.quantile_levels)
    arrays = {}
    for i, layer in enumerate(layers):
        found = examples[layer]
        arrays[f"L{i:02d}_example_index"] = found.indices.numpy().astype(np.int64)
        arrays[f"L{i:02d}_example_value"] = found.values.numpy().astype(np.float32)
        arrays[f"L{i:02d}_example_position"] = found.positions.numpy().astype(np.int64)
        arrays[f"L{i:02d}_example_window"] = found.windows.numpy().astype(np.int64)
        arrays[f"L{i:02d}_max_quantiles"] = np.quantile(maxima[layer], levels, axis=0).astype(np.float32)
        arrays[f"L{i:02d}_mean_quantiles"] = np.quantile(means[layer], levels, axis=0).astype(np.float32)
        arrays[f"L{i:02d}_max_mean"] = maxima[layer].mean(axis=0, dtype=np.float64).astype(np.float32)
    return arrays


def layer_visualizations(model: AnalysedModel, layer: str, settings: FeatureSettings) -> dict[str, np.ndarray]:
    """Feature visualisations of every channel of ``layer`` (float16) and each one's activation on its image.

    Shape:
        returns ``vis`` (K, c, H, W) float16 in [0, 1] and ``vis_activation`` (K,) float32: the channel's
        spatial-mean activation on its stored (float16) image.
    """
    channels = model.graph[layer].channels
    parts = [feature_visualization(model, layer, list(range(start, min(start + settings.channel_batch, channels))),
                                   steps=settings.steps, seed=settings.seed, lr=settings.lr)
             for start in range(0, channels, settings.channel_batch)]
    vis = torch.cat(parts).half()
    reached = model.capture(vis.float(), [layer], reduce="mean", batch_size=settings.channel_batch)[layer]
    activation = reached[torch.arange(channels), torch.arange(channels)].float().numpy()
    return {"vis": vis.numpy(), "vis_activation": activation}


def _patches(images: torch.Tensor, arrays: dict[str, np.ndarray], i: int, model: AnalysedModel, layer: str,
             ) -> np.ndarray | None:
    """The receptive-field patches of layer ``i``'s examples (float16), or None when they would be too large.

    Shape:
        returns (K, k, c, h, w), cropped as :func:`advlens.features.dataset_examples_for_layers` crops them.
    """
    index = arrays[f"L{i:02d}_example_index"]
    rf = model.graph.receptive_field(layer)
    height, width = patch_shape(rf, tuple(images.shape[2:]))
    if index.size * images.shape[1] * height * width * 2 > PATCH_BYTES_PER_LAYER:
        logger.info("features: %s patches would exceed %d MB; stored without (windows locate them)", layer,
                    PATCH_BYTES_PER_LAYER >> 20)
        return None
    position = torch.from_numpy(arrays[f"L{i:02d}_example_position"]).reshape(-1, 2)
    crops, _ = crop_patches(images[torch.from_numpy(index.reshape(-1))].float(), position[:, 0], position[:, 1], rf)
    return crops.half().reshape(*index.shape, *crops.shape[1:]).numpy()


def _clocked(compute) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``compute()``'s arrays and its (wall, CPU) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    arrays = compute()
    return arrays, np.array([time.perf_counter() - wall, time.process_time() - cpu])


def _data_pass(model: AnalysedModel, layers: list[str], images: torch.Tensor, settings: FeatureSettings,
               work: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The examples and statistics of every layer (see :func:`examples_and_statistics`), checkpointed in ``work``,
    and the (wall, CPU) seconds they took."""
    if not layers:
        logger.warning("features: the model has no spatial activation layer; the stage stores no features")
        return {}, np.zeros(2)
    stored = load_checkpoint(work / "examples.npz")
    if stored is not None:
        logger.info("features: dataset examples and statistics from the checkpoint of an interrupted run")
    else:
        arrays, seconds = _clocked(lambda: examples_and_statistics(model, layers, images, settings))
        stored = {**arrays, "seconds": seconds}
        save_checkpoint(work / "examples.npz", **stored)
    seconds = stored.pop("seconds")
    return stored, seconds


def _write_layers(out: StageWriter, model: AnalysedModel, layers: list[str], images: torch.Tensor,
                  arrays: dict[str, np.ndarray], settings: FeatureSettings, work: Path) -> dict[str, list]:
    """Visualise each layer (or take its checkpoint), write its arrays; per-layer attrs."""
    channels = [model.graph[layer].channels for layer in layers]
    level = settings.quantile_levels.index(settings.acceptance_level)
    record: dict[str, list] = {"seconds": [], "cpu_seconds": [], "layer_acceptance": [], "patches": []}
    with tqdm(total=sum(channels), desc="features: visualisations", unit="ch") as bar:
        for i, layer in enumerate(layers):
            bar.set_postfix_str(layer)
            checkpoint = work / f"L{i:02d}_vis.npz"
            stored = load_checkpoint(checkpoint)
            if stored is None:
                stored, seconds = _clocked(lambda: layer_visualizations(model, layer, settings))
                stored["seconds"] = seconds
                save_checkpoint(checkpoint, **stored)
            bar.update(channels[i])
            record["seconds"].append(round(float(stored["seconds"][0]), 3))
            record["cpu_seconds"].append(round(float(stored["seconds"][1]), 3))
            accepted = stored["vis_activation"] > arrays[f"L{i:02d}_mean_quantiles"][level]
            record["layer_acceptance"].append(float(accepted.mean()) if accepted.size else 0.0)
            out.array(f"L{i:02d}_vis", stored["vis"], chunks=(CHUNK_CHANNELS, *stored["vis"].shape[1:]))
            out.array(f"L{i:02d}_vis_activation", stored["vis_activation"].astype(np.float32))
            crops = _patches(images, arrays, i, model, layer)
            record["patches"].append(crops is not None)
            if crops is not None:
                out.array(f"L{i:02d}_patches", crops, chunks=(CHUNK_CHANNELS, *crops.shape[1:]))
    return record


def run_features(ctx: StageContext, out: StageWriter) -> dict:
    """Feature visualisations, top-k dataset examples and activation statistics of every channel."""
    examined = ctx.store().group("predict").attrs.get("examined")
    images = ctx.data.images
    if examined != len(images):
        raise StoreError(f"the store's predict stage examined {examined} images but prepare was given {len(images)}; "
                         "prepare the store again with the same dataset and --limit")
    model = ctx.model
    layers = feature_layers(model)
    settings = FeatureSettings.for_run(ctx.config, len(images))
    work = ctx.work_dir("features", key=settings.as_attrs())
    machine = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "load_average": round(os.getloadavg()[0], 2)}
    arrays, data_seconds = _data_pass(model, layers, images, settings, work)
    record = _write_layers(out, model, layers, images, arrays, settings, work)
    for name, values in arrays.items():
        out.array(name, values)
    channels = [model.graph[layer].channels for layer in layers]
    total = sum(channels)
    overall = float(np.dot(record["layer_acceptance"], channels) / total) if total else 0.0
    out.attrs(layers=layers, channels=channels, channels_total=total, images=len(images), **settings.as_attrs(),
              receptive_fields=[_rf_record(model, layer) for layer in layers], **record,
              examples_seconds=round(float(data_seconds[0]), 3),
              examples_cpu_seconds=round(float(data_seconds[1]), 3), machine=machine, acceptance=overall)
    logger.info("features: %d channels of %d layers; acceptance %.1f%% (activation on the visualisation > the "
                "channel's %g quantile over %d images)", total, len(layers), 100 * overall,
                settings.acceptance_level, len(images))
    return {"acceptance": overall}


def _rf_record(model: AnalysedModel, layer: str) -> dict[str, list[int]]:
    rf = model.graph.receptive_field(layer)
    return {"size": list(rf.size), "jump": list(rf.jump), "start": list(rf.start)}


def outdated(attrs: dict[str, Any], config: PrepareConfig) -> str | None:
    """How the recorded settings of a finished stage differ from those ``config`` asks for, or None."""
    if attrs.get("steps") != config.feature_steps:
        return f"{attrs.get('steps')} feature-visualisation steps, not the {config.feature_steps} asked for"
    return None


STAGES = (
    Stage("features", ("predict",), run_features,
          "feature visualisations, top-k dataset examples and activation statistics of every channel of the "
          "activation layers", outdated=outdated),
)
"""The features family: one stage. It reads ``predict`` (the examined images it indexes)."""
