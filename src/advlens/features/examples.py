"""Dataset examples: for every channel of a layer, the images that excite it most, and where.

An image's score for a channel is the channel's *maximal* activation over the feature map (its
strongest unit); the patch shown is the theoretical receptive field of that unit (see
:mod:`advlens.features.patches`). The images are read in one streaming pass, batch by
batch, keeping a running top-k per channel (:class:`~advlens.features.topk.RunningTopK`): memory is
bounded by k × channels (plus one batch), never by the number of images. Ties rank the earlier
image first; among equal maxima in one map, the first position in row-major order is the peak.

Patches are cropped once, after the pass, from the winning images when the images are a tensor (or a
dataset); from an iterable of batches, whose images cannot be read again, they are cropped during the
pass for the entries that enter the top-k. They take k × channels × patch pixels: for a deep layer
of a large model (RF ≥ the image) that is k whole images per channel; ``patches=False`` skips them
(``indices`` and ``windows`` still locate every patch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advlens.data import ImageDataset
from advlens.errors import ConfigError, DatasetError, ModelError
from advlens.features.patches import as_receptive_field, crop_patches, patch_windows
from advlens.features.taps import tapped_forward
from advlens.features.topk import RunningTopK, merge_payload
from advlens.models.adapter import AnalysedModel
from advlens.models.receptive_field import ReceptiveField

logger = logging.getLogger(__name__)

Images = torch.Tensor | ImageDataset | Iterable[Any]


@dataclass(frozen=True)
class DatasetExamples:
    """The top-k dataset examples of every channel of one layer.

    Shape:
        indices: (K, k) int64 index of the image in the stream, best first.
        values: (K, k) float32 the channel's maximal activation on that image.
        positions: (K, k, 2) int64 (row, column) of the peak in the feature map.
        windows: (K, k, 4) int64 (top, left, bottom, right) of each patch in image coordinates
            (bottom/right exclusive; may extend outside the image).
        patches: (K, k, C, h, w) float32 pixels of the patch, ``pad_value`` outside the image; None
            when not asked for.
    """

    layer: str
    indices: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    windows: torch.Tensor
    patches: torch.Tensor | None
    rf: ReceptiveField
    num_images: int

    @property
    def num_channels(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def _batches(images: Images, batch_size: int, channels: int) -> Iterator[torch.Tensor]:
    """Image batches (B, C, H, W) from a tensor or an iterable of batches or of (images, …) tuples."""
    source: Iterable[Any] = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    size = None
    for batch in source:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != channels:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise DatasetError(f"image batches must be N×{channels}×H×W tensors for this model, got {shape}")
        if size is not None and batch.shape[2:] != size:
            raise DatasetError(f"all images must have one size; got {tuple(size)} then {tuple(batch.shape[2:])}")
        size = batch.shape[2:]
        yield batch


class _LayerTopK:
    """Running top-k images and peak positions of every channel of one layer (and, when asked, patches)."""

    def __init__(self, layer: str, rf: ReceptiveField, k: int, pad_value: float, stream_patches: bool) -> None:
        self.layer, self.rf, self.k, self.pad_value = layer, rf, k, pad_value
        self.stream_patches = stream_patches
        self.tracker: RunningTopK | None = None
        self.positions = torch.empty(0)
        self.patches: torch.Tensor | None = None

    def update(self, maps: torch.Tensor, batch: torch.Tensor) -> None:
        if self.tracker is None:
            self.tracker = RunningTopK(self.k, maps.shape[1], maps.device)
        width = maps.shape[3]
        flat = maps.flatten(2).float()
        peak = flat.argmax(dim=2)
        rows, cols = peak // width, peak % width
        kept = self.tracker.values.shape[0]
        source = self.tracker.update(flat.gather(2, peak[..., None])[..., 0])
        self.positions = merge_payload(self.positions, source, kept,
                                       lambda b, ch: torch.stack([rows[b, ch], cols[b, ch]], dim=1))
        if self.stream_patches:
            self.patches = merge_payload(
                self.patches if self.patches is not None else torch.empty(0), source, kept,
                lambda b, ch: crop_patches(batch[b].float(), rows[b, ch], cols[b, ch], self.rf, self.pad_value)[0])

    def result(self, image_size: tuple[int, int], images: torch.Tensor | None) -> DatasetExamples:
        """The examples, channel first; patches cropped here from ``images`` (the whole set) when given."""
        tracker = self.tracker
        assert tracker is not None
        positions = self.positions.cpu()
        indices = tracker.indices.t().cpu().contiguous()  # (K, k)
        rows, cols = positions[..., 0].t().reshape(-1), positions[..., 1].t().reshape(-1)
        windows = patch_windows(self.rf, rows, cols, image_size).view(*indices.shape, 4)
        patches = self.patches.transpose(0, 1).cpu().contiguous() if self.patches is not None else None
        if images is not None:
            crops = crop_patches(images[indices.reshape(-1)].float(), rows, cols, self.rf, self.pad_value)[0]
            patches = crops.view(*indices.shape, *crops.shape[1:])
        return DatasetExamples(
            layer=self.layer, indices=indices, values=tracker.values.t().cpu().contiguous(),
            positions=positions.transpose(0, 1).contiguous(), windows=windows, patches=patches, rf=self.rf,
            num_images=tracker.seen)


def dataset_examples_for_layers(model: AnalysedModel, layers: Sequence[str], images: Images, k: int = 10,
                                batch_size: int = 256, rf: Mapping[str, Any] | None = None,
                                device: torch.device | str | None = None, pad_value: float = 0.0,
                                patches: bool = True, progress: Callable[[int], None] | None = None,
                                ) -> dict[str, DatasetExamples]:
    """Top-k dataset examples of every channel of several layers, from one forward pass per batch.

    Args:
        model: the analysed model (it normalizes its pixel input itself).
        layers: layer names (the model graph's names; dotted module names for modules).
        images: a tensor (N, C, H, W) in [0, 1], an ``ImageDataset``, or an iterable of such batches
            (or of ``(images, labels)`` tuples), read once in order; image indices count from 0 over it.
        k: examples per channel.
        batch_size: images per forward pass when ``images`` is a tensor or dataset.
        rf: per layer, its receptive field (a ``ReceptiveField`` or ``(size, jump, start)``); default (and
            for layers it leaves out): ``model.graph.receptive_field(layer)``.
        device: where to compute; default the model's (the model must already be there).
        pad_value: pixel value of patch pixels outside the image.
        patches: crop the patches (memory: k × channels × patch pixels per layer).
        progress: called with the number of images read so far after each batch.

    Shape:
        see :class:`DatasetExamples`; patches have the RF size, at most the image size.
    """
    if not isinstance(model, AnalysedModel):
        raise ModelError(f"model must be an advlens AnalysedModel (see advlens.load_model), got {type(model).__name__}")
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ModelError("no layers given; name at least one layer")
    if k < 1 or batch_size < 1:
        raise ConfigError(f"k and batch_size must be ≥ 1, got k={k}, batch_size={batch_size}")
    device = torch.device(device) if device is not None else model.device
    if device != model.device:
        raise ConfigError(f"the model is on {model.device}, not {device}; move it first with "
                          f"model.to({str(device)!r})")
    given = dict(rf or {})
    unknown = set(given) - set(layers)
    if unknown:
        raise ModelError(f"rf given for layer(s) not asked for: {', '.join(sorted(unknown))}")
    graph = model.graph
    geometry = {}
    for layer in layers:
        if not graph[layer].spatial:
            raise ModelError(f"layer {layer!r} outputs {tuple(graph[layer].shape)} per image; dataset examples "
                             "need a spatial (K×h×w) layer")
        geometry[layer] = (as_receptive_field(given[layer], graph.input_size) if layer in given
                           else graph.receptive_field(layer))
    whole = images.images if isinstance(images, ImageDataset) else images
    indexable = isinstance(whole, torch.Tensor)
    if indexable and len(whole) < k:
        raise DatasetError(f"only {len(whole)} images for k={k} examples per channel; pass more images or a smaller k")
    states = {layer: _LayerTopK(layer, geometry[layer], k, pad_value, patches and not indexable) for layer in layers}
    image_size, seen = (0, 0), 0
    with tapped_forward(model, layers) as run, torch.no_grad():
        for batch in _batches(whole, batch_size, model.input_shape[0]):
            batch = batch.to(device)
            image_size, seen = (batch.shape[2], batch.shape[3]), seen + batch.shape[0]
            outputs = run(batch)
            for layer, state in states.items():
                state.update(outputs[layer], batch)
            if progress is not None:
                progress(seen)
    if seen < k:
        raise DatasetError(f"only {seen} images for k={k} examples per channel; pass more images or a smaller k")
    logger.debug("dataset examples of %d layers over %d images", len(layers), seen)
    source = whole if indexable and patches else None
    return {layer: state.result(image_size, source) for layer, state in states.items()}


def dataset_examples(model: AnalysedModel, layer: str, images: Images, k: int = 10, batch_size: int = 256,
                     rf: Any = None, device: torch.device | str | None = None, pad_value: float = 0.0,
                     patches: bool = True, progress: Callable[[int], None] | None = None) -> DatasetExamples:
    """Top-k dataset examples of every channel of ``layer``: see :func:`dataset_examples_for_layers`.

    ``rf`` is the layer's receptive field (a ``ReceptiveField`` or ``(size, jump, start)``); default:
    ``model.graph.receptive_field(layer)``.
    """
    return dataset_examples_for_layers(model, [layer], images, k=k, batch_size=batch_size,
                                       rf=None if rf is None else {layer: rf}, device=device,
                                       pad_value=pad_value, patches=patches, progress=progress)[layer]
