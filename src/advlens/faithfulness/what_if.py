"""What-if edits of a layer's channels (issue 13, item 3): the class probabilities when some channels of a layer
take other values in the forward pass.

:func:`what_if` is the general edit — any values (maps, or one number such as 0) for any channels of any layer.
:func:`edit_pair` is what the app's what-if panel asks of a benign/adversarial pair:

- ``"restore"``: the adversarial forward pass with the channels given back their benign maps (does undoing these
  neurons undo the attack?);
- ``"attack"``: the benign forward pass with the channels set to their adversarial maps (do these neurons alone
  carry the attack?);
- ``"zero_adversarial"`` / ``"zero_benign"``: the adversarial (benign) forward pass with the channels zeroed.

:func:`record_pair` keeps a pair's unedited outputs and the layer's maps, so repeated edits of the same pair (the
panel's) cost one forward pass each. The replacement goes through the model adapter (:meth:`AnalysedModel.patching`), whose hooks are removed when the
pass ends, also when it raises; registrations belong to the calling thread, so a web server may edit in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from advlens.errors import ConfigError
from advlens.models import AnalysedModel

EDIT_MODES = ("restore", "attack", "zero_adversarial", "zero_benign")
"""Pair edits: which forward pass is edited (:data:`EDITED_SIDE`) and what the channels get."""

EDITED_SIDE = {"restore": "adversarial", "attack": "benign", "zero_adversarial": "adversarial",
               "zero_benign": "benign"}
"""The image whose forward pass each mode edits."""

DEFAULT_BATCH = 128


@dataclass(frozen=True)
class WhatIf:
    """The output of an edited forward pass.

    Shape:
        logits, probabilities: (N, num_classes) float32 on the CPU; probabilities are the softmax of the logits.
    """

    logits: torch.Tensor
    probabilities: torch.Tensor


@dataclass(frozen=True)
class PairRecord:
    """The unedited forward passes of pairs and the maps of one layer on both images (:func:`record_pair`).

    Shape:
        benign, adversarial: (N, num_classes); benign_maps, adversarial_maps: (N, K, h, w) (or (N, D)) on the
        model's device.
    """

    layer: str
    benign: WhatIf
    adversarial: WhatIf
    benign_maps: torch.Tensor
    adversarial_maps: torch.Tensor


@dataclass(frozen=True)
class PairEdit:
    """A pair edit (:func:`edit_pair`) beside the pair's unedited outputs.

    Attributes:
        mode: one of :data:`EDIT_MODES`; ``side`` the edited image (``"benign"`` or ``"adversarial"``).
        channels: the edited channels (int64, as given).
        benign, adversarial: the unedited forward passes of the two images.
        edited: the edited forward pass of ``side``'s image.

    Shape:
        each ``WhatIf``: (N, num_classes) for N pairs.
    """

    mode: str
    side: str
    channels: np.ndarray
    benign: WhatIf
    adversarial: WhatIf
    edited: WhatIf


def _images(model: AnalysedModel, images: torch.Tensor, what: str) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim == len(model.input_shape):
        images = images[None]
    if not images.is_floating_point():
        raise ConfigError(f"{what} must be float pixels in [0, 1], got {images.dtype}")
    model.check_input(images)
    return images


def check_channels(model: AnalysedModel, layer: str, channels: Sequence[int] | np.ndarray | torch.Tensor
                   ) -> tuple[str, np.ndarray]:
    """``layer``'s name in the model graph and ``channels`` as int64 ids, each checked.

    Raises:
        ModelError: no such layer (the message lists close names).
        ConfigError: a channel that is not a whole number, outside ``0 … C−1``, or named twice.
    """
    name = model.graph.resolve(layer)
    count = model.graph[name].channels
    ids = np.asarray(channels.cpu() if isinstance(channels, torch.Tensor) else channels)
    if ids.size == 0:
        return name, np.zeros(0, dtype=np.int64)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ConfigError(f"channels must be a list of whole channel ids of layer {name!r}, got {ids.tolist()!r}")
    ids = ids.astype(np.int64)
    outside = ids[(ids < 0) | (ids >= count)]
    if outside.size:
        raise ConfigError(f"channel {int(outside[0])} does not exist: layer {name!r} has channels 0–{count - 1}")
    if len(np.unique(ids)) != len(ids):
        twice = next(int(c) for c in ids if np.count_nonzero(ids == c) > 1)
        raise ConfigError(f"channel {twice} of layer {name!r} is named twice")
    return name, ids


def _values(model: AnalysedModel, layer: str, ids: np.ndarray, values, count: int) -> torch.Tensor | float:
    """``values`` checked: a finite number, or maps of shape (k, …) or (N, k, …) of the layer's output."""
    if isinstance(values, Real) and not isinstance(values, bool):
        if not np.isfinite(float(values)):
            raise ConfigError(f"the value the channels take must be finite, got {values!r}")
        return float(values)
    if not isinstance(values, (torch.Tensor, np.ndarray)):
        raise ConfigError(f"values must be a number or a tensor of the channels' maps, got {type(values).__name__}")
    tensor = torch.as_tensor(values)
    per_image = (len(ids), *model.graph[layer].shape[1:])
    if tuple(tensor.shape) == per_image:
        tensor = tensor[None]
    if tuple(tensor.shape[1:]) != per_image or tensor.shape[0] not in (1, count):
        raise ConfigError(f"values for {len(ids)} channel(s) of layer {layer!r} must have shape "
                          f"{per_image} or ({count}, {', '.join(map(str, per_image))}), got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ConfigError(f"values must be float maps, got {tensor.dtype}")
    return tensor


def channel_replacer(index: torch.Tensor, fill: torch.Tensor | float,
                     rows: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The body of a layer-output patch that sets the channels ``index`` to ``fill``: a number, or maps that are
    the same for every image (first dimension 1) or one per image, of which the batch's rows are
    ``rows[0]:rows[1]`` (the caller moves ``rows`` along as it runs its batches).

    Shape: index (k,); fill (1 or N, k, h, w); the output (B, K, h, w) is cloned, never edited in place."""
    def replace(output: torch.Tensor) -> torch.Tensor:
        edited = output.clone()
        if isinstance(fill, float):
            edited[:, index] = fill
        else:
            part = fill if fill.shape[0] == 1 else fill[rows[0]:rows[1]]
            edited[:, index] = part.to(edited.device, edited.dtype).expand(len(edited), *part.shape[1:])
        return edited
    return replace


def what_if(model: AnalysedModel, images: torch.Tensor, layer: str,
            channels: Sequence[int] | np.ndarray | torch.Tensor, values: torch.Tensor | np.ndarray | float,
            batch_size: int | None = None) -> WhatIf:
    """The model's outputs with ``layer``'s ``channels`` replaced by ``values`` in the forward pass.

    Every other channel, and every other layer before the edit, computes as usual; the layers after ``layer``
    see the edited output. No channel (``channels=[]``) gives the unedited output.

    Args:
        model: the analysed model (it normalises inside; the edit is in its own layer space).
        images: pixels in [0, 1].
        layer: a layer of ``model.graph`` (a name or an alias).
        channels: channel ids of that layer (distinct).
        values: a number every position of the channels takes (``0.0``: zeroed), or their maps, the same for
            every image (k, h, w) or one per image (N, k, h, w), in the order of ``channels``.
        batch_size: images per forward pass (default 128).

    Returns:
        logits and softmax probabilities, on the CPU.

    Raises:
        ModelError: ``layer`` is not a layer of the model, or ``images`` have the wrong shape.
        ConfigError: bad channel ids, values of the wrong shape, a bad batch size.

    Shape:
        images: (N, C, H, W) or (C, H, W); values: a number, (k, h, w) or (N, k, h, w) for a (k-channel) edit of
        a (K, h, w) layer ((k,) or (N, k) for a vector layer); returns (N, num_classes).
    """
    images = _images(model, images, "images")
    name, ids = check_channels(model, layer, channels)
    fill = _values(model, name, ids, values, len(images))
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    step = batch_size or DEFAULT_BATCH
    index = torch.as_tensor(ids, device=model.device)
    rows = [0, 0]

    replace = channel_replacer(index, fill, rows)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), step):
            rows[:] = [start, min(start + step, len(images))]
            batch = images[start:start + step].to(model.device, model.mean.dtype)
            if len(ids):
                with model.patching(name, replace):
                    chunks.append(model(batch).float().cpu())
            else:
                chunks.append(model(batch).float().cpu())
    logits = torch.cat(chunks) if chunks else torch.zeros(0, model.num_classes)
    return WhatIf(logits, logits.softmax(dim=1))


def record_pair(model: AnalysedModel, benign: torch.Tensor, adversarial: torch.Tensor, layer: str) -> PairRecord:
    """One forward pass of both images of the pairs, recording ``layer``'s maps (every channel) and the outputs.

    Keep it to edit the same pairs many times (:func:`edit_pair` then runs one forward pass per edit).

    Raises:
        ConfigError: images of different shapes. ModelError: an unknown layer, images the model cannot take.

    Shape:
        benign, adversarial: (N, C, H, W) or (C, H, W) pixels in [0, 1].
    """
    benign = _images(model, benign, "benign images")
    adversarial = _images(model, adversarial, "adversarial images")
    if benign.shape != adversarial.shape:
        raise ConfigError(f"benign images {tuple(benign.shape)} and adversarial images {tuple(adversarial.shape)} "
                          "must pair up one to one")
    name = model.graph.resolve(layer)
    count = len(benign)
    with torch.no_grad(), model.tapping([name]) as taps:
        logits = model(torch.cat([benign, adversarial]).to(model.device, model.mean.dtype)).float().cpu()
        maps = taps[name].detach()
    return PairRecord(name, WhatIf(logits[:count], logits[:count].softmax(1)),
                      WhatIf(logits[count:], logits[count:].softmax(1)), maps[:count], maps[count:])


def edit_pair(model: AnalysedModel, benign: torch.Tensor, adversarial: torch.Tensor, layer: str,
              channels: Sequence[int] | np.ndarray | torch.Tensor, mode: str,
              record: PairRecord | None = None) -> PairEdit:
    """A what-if edit of pairs (see :data:`EDIT_MODES`): restore channels to benign in the adversarial pass, set them
    to adversarial in the benign pass, or zero them in either, beside both unedited outputs.

    Two forward passes: :func:`record_pair` (both images at once; skipped when its ``record`` of these pairs is
    given), then the edit (none for no channel: the edited output is then the unedited one).

    Raises:
        ConfigError: an unknown mode, images of different shapes, bad channels (see :func:`what_if`), a record of
            another layer or number of pairs.
        ModelError: an unknown layer, images the model cannot take.

    Shape:
        benign, adversarial: (N, C, H, W) or (C, H, W) pixels in [0, 1]; every output (N, num_classes).
    """
    if mode not in EDIT_MODES:
        raise ConfigError(f"edit mode {mode!r} is not one of {', '.join(map(repr, EDIT_MODES))}")
    name, ids = check_channels(model, layer, channels)
    side = EDITED_SIDE[mode]
    image = _images(model, adversarial if side == "adversarial" else benign, f"{side} images")
    if record is None:
        record = record_pair(model, benign, adversarial, name)
    elif record.layer != name or len(record.benign_maps) != len(image):
        raise ConfigError(f"the pair record is of layer {record.layer!r} for {len(record.benign_maps)} pair(s), "
                          f"not of layer {name!r} for {len(image)}: record these pairs with record_pair first")
    if mode == "restore":
        values: torch.Tensor | float = record.benign_maps[:, torch.as_tensor(ids, device=record.benign_maps.device)]
    elif mode == "attack":
        values = record.adversarial_maps[:, torch.as_tensor(ids, device=record.adversarial_maps.device)]
    else:
        values = 0.0
    unedited = record.benign if side == "benign" else record.adversarial
    edited = what_if(model, image, name, ids, values) if len(ids) else unedited
    return PairEdit(mode, side, ids, record.benign, record.adversarial, edited)
