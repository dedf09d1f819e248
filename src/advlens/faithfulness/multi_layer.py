"""What-if edits of channels at several layers at once (issue 13, item 3, "pinned pathway nodes").

The one-layer edit is :mod:`advlens.faithfulness.what_if`; this module edits many layers in one forward pass, as the
Pathways page needs for neurons pinned across the network:

- :func:`what_if_layers` — any values for any channels of any layers;
- :func:`record_layers` — one forward pass of both images of the pairs keeping every given layer's maps;
- :func:`edit_layers` — the panel's edits (:data:`~advlens.faithfulness.what_if.EDIT_MODES`): restore the channels
  to benign in the adversarial pass, set them to adversarial in the benign pass, or zero them.

What a channel takes in a multi-layer edit: the map it had in the **unedited** pass of the other image (restore:
the benign pass; attack: the adversarial pass), whatever the edits upstream did. So a pinned channel downstream of
another pinned channel is *held* at its recorded value; it does not see the upstream edit. This is the usual
patching convention (the edited pass is the unedited one with exactly the named values replaced) and it makes the
result independent of the order in which the layers run.

The replacements go through the model adapter (:meth:`AnalysedModel.tapping`), whose hooks are removed when the
pass ends, also when it raises; functional ops (``torch.relu`` inside a block) are addressed like modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from advlens.errors import ConfigError
from advlens.faithfulness.what_if import (DEFAULT_BATCH, EDIT_MODES, EDITED_SIDE, WhatIf, _images, _values,
                                          channel_replacer, check_channels)
from advlens.models import AnalysedModel

Channels = Sequence[int] | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class LayersRecord:
    """The unedited forward passes of pairs and the maps of several layers on both images (:func:`record_layers`).

    Shape:
        benign, adversarial: (N, num_classes); benign_maps[layer], adversarial_maps[layer]: (N, K, h, w) (or
        (N, D)) on the model's device, every channel of the layer.
    """

    layers: tuple[str, ...]
    benign: WhatIf
    adversarial: WhatIf
    benign_maps: dict[str, torch.Tensor]
    adversarial_maps: dict[str, torch.Tensor]


@dataclass(frozen=True)
class LayersEdit:
    """A multi-layer pair edit (:func:`edit_layers`) beside the pairs' unedited outputs.

    Attributes:
        mode: one of :data:`~advlens.faithfulness.what_if.EDIT_MODES`; ``side`` the edited image.
        channels: ``{layer: int64 channel ids}`` of the edit, layers by their graph names (in the order given).
        benign, adversarial: the unedited passes; edited: the edited pass of ``side``'s images.

    Shape:
        each ``WhatIf``: (N, num_classes) for N pairs.
    """

    mode: str
    side: str
    channels: dict[str, np.ndarray]
    benign: WhatIf
    adversarial: WhatIf
    edited: WhatIf


def check_layer_channels(model: AnalysedModel, channels: Mapping[str, Channels]) -> dict[str, np.ndarray]:
    """``{layer: channels}`` with each layer by its graph name and its ids checked; layers with no channel are
    dropped.

    Raises:
        ModelError: a layer that is not the model's (the message lists close names).
        ConfigError: not a mapping; a bad channel id (see :func:`~advlens.faithfulness.what_if.check_channels`);
            one layer named twice (e.g. by two aliases).
    """
    if not isinstance(channels, Mapping):
        raise ConfigError(f"the edited channels must be a mapping {{layer: channel ids}}, got "
                          f"{type(channels).__name__}")
    out: dict[str, np.ndarray] = {}
    for layer, ids in channels.items():
        name, checked = check_channels(model, layer, ids)
        if name in out:
            raise ConfigError(f"layer {name!r} is named twice (as {layer!r} and another alias): give its channels once")
        if len(checked):
            out[name] = checked
    return out


def what_if_layers(model: AnalysedModel, images: torch.Tensor,
                   edits: Mapping[str, tuple[Channels, torch.Tensor | np.ndarray | float]],
                   batch_size: int | None = None) -> WhatIf:
    """The model's outputs with, at every layer of ``edits``, its channels replaced by the values given.

    Every edit applies in the same forward pass; the layers after an edited layer see its edited output, and a
    later edit overwrites the channels it names whatever the earlier edits did to them.

    Args:
        images: pixels in [0, 1].
        edits: ``{layer: (channels, values)}``; values as in :func:`~advlens.faithfulness.what_if.what_if`: a
            number every position takes (``0.0``: zeroed) or the channels' maps, the same for every image
            (k, h, w) or one per image (N, k, h, w), in the order of ``channels``.
        batch_size: images per forward pass (default 128).

    Raises:
        ModelError: an unknown layer, images the model cannot take. ConfigError: bad channels or values, a layer
            named twice, a bad batch size.

    Shape:
        images: (N, C, H, W) or (C, H, W); returns (N, num_classes) on the CPU.
    """
    images = _images(model, images, "images")
    if not isinstance(edits, Mapping):
        raise ConfigError(f"edits must be a mapping {{layer: (channels, values)}}, got {type(edits).__name__}")
    for layer, edit in edits.items():
        if not isinstance(edit, (tuple, list)) or len(edit) != 2:
            raise ConfigError(f"the edit of layer {layer!r} must be (channels, values), got {str(edit)[:60]!r}")
    names = check_layer_channels(model, {layer: edit[0] for layer, edit in edits.items()})
    by_name = {model.graph.resolve(layer): edit[1] for layer, edit in edits.items()}
    fills = {name: (torch.as_tensor(ids, device=model.device), _values(model, name, ids, by_name[name], len(images)))
             for name, ids in names.items()}
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    step = batch_size or DEFAULT_BATCH
    rows = [0, 0]

    replace = {name: channel_replacer(index, fill, rows) for name, (index, fill) in fills.items()}
    chunks = []
    with torch.no_grad(), model.tapping((), replace):
        for start in range(0, len(images), step):
            rows[:] = [start, min(start + step, len(images))]
            chunks.append(model(images[start:start + step].to(model.device, model.mean.dtype)).float().cpu())
    logits = torch.cat(chunks) if chunks else torch.zeros(0, model.num_classes)
    return WhatIf(logits, logits.softmax(dim=1))


def record_layers(model: AnalysedModel, benign: torch.Tensor, adversarial: torch.Tensor,
                  layers: Sequence[str]) -> LayersRecord:
    """One forward pass of both images of the pairs, keeping every layer's maps (all channels) and the outputs.

    Keep it to edit the same pairs many times (:func:`edit_layers` then runs one forward pass per edit).

    Raises:
        ConfigError: images of different shapes, no layer. ModelError: an unknown layer, bad images.

    Shape:
        benign, adversarial: (N, C, H, W) or (C, H, W) pixels in [0, 1].
    """
    benign = _images(model, benign, "benign images")
    adversarial = _images(model, adversarial, "adversarial images")
    if benign.shape != adversarial.shape:
        raise ConfigError(f"benign images {tuple(benign.shape)} and adversarial images {tuple(adversarial.shape)} "
                          "must pair up one to one")
    names = tuple(dict.fromkeys(model.graph.resolve(layer) for layer in layers))
    if not names:
        raise ConfigError("record_layers needs at least one layer")
    count = len(benign)
    with torch.no_grad(), model.tapping(list(names)) as taps:
        logits = model(torch.cat([benign, adversarial]).to(model.device, model.mean.dtype)).float().cpu()
        maps = {name: taps[name].detach() for name in names}
    return LayersRecord(names, WhatIf(logits[:count], logits[:count].softmax(1)),
                        WhatIf(logits[count:], logits[count:].softmax(1)),
                        {name: value[:count] for name, value in maps.items()},
                        {name: value[count:] for name, value in maps.items()})


def edit_layers(model: AnalysedModel, benign: torch.Tensor, adversarial: torch.Tensor,
                channels: Mapping[str, Channels], mode: str, record: LayersRecord | None = None) -> LayersEdit:
    """A what-if edit of pairs at several layers at once (see :data:`~advlens.faithfulness.what_if.EDIT_MODES`),
    beside both unedited outputs; each channel takes its map from the *unedited* pass of the other image (module
    docstring).

    Two forward passes: :func:`record_layers` (skipped when its ``record`` of these pairs and layers is given), then
    the edit of every layer at once (none when no channel is named: the edited output is then the unedited one).

    Raises:
        ConfigError: an unknown mode, bad channels, images of different shapes, a record of other layers or another
            number of pairs.
        ModelError: an unknown layer, images the model cannot take.

    Shape:
        benign, adversarial: (N, C, H, W) or (C, H, W) pixels in [0, 1]; every output (N, num_classes).
    """
    if mode not in EDIT_MODES:
        raise ConfigError(f"edit mode {mode!r} is not one of {', '.join(map(repr, EDIT_MODES))}")
    checked = check_layer_channels(model, channels)
    side = EDITED_SIDE[mode]
    image = _images(model, adversarial if side == "adversarial" else benign, f"{side} images")
    if record is None:
        record = record_layers(model, benign, adversarial, list(checked) or [model.analysed_layer_name])
    else:
        missing = [name for name in checked if name not in record.layers]
        if missing or len(record.benign.logits) != len(image):
            raise ConfigError(f"the record holds layers {', '.join(record.layers)} for {len(record.benign.logits)} "
                              f"pair(s), not {', '.join(checked)} for {len(image)}: record these pairs and layers "
                              "with record_layers first")
    unedited = record.benign if side == "benign" else record.adversarial
    if not checked:
        return LayersEdit(mode, side, {}, record.benign, record.adversarial, unedited)
    source = {"restore": record.benign_maps, "attack": record.adversarial_maps}.get(mode)
    edits: dict[str, tuple[np.ndarray, torch.Tensor | float]] = {}
    for name, ids in checked.items():
        if source is None:
            edits[name] = (ids, 0.0)
        else:
            edits[name] = (ids, source[name][:, torch.as_tensor(ids, device=source[name].device)])
    edited = what_if_layers(model, image, edits, batch_size=max(len(image), 1))
    return LayersEdit(mode, side, checked, record.benign, record.adversarial, edited)


__all__ = ["LayersRecord", "LayersEdit", "check_layer_channels", "what_if_layers", "record_layers", "edit_layers"]
