"""Connection influence between any two layers by gradient × activation (spec-004 §5 ``grad_x_act``).

``infl(i → j) = Σ_{h,w} A_src,i[h, w] · ∂ max_{h',w'} C_tgt,j / ∂ A_src,i[h, w]``: the linear
contribution of source channel ``i`` to the peak of target channel ``j``, through everything between
the two layers (residual adds, pooling, several convolutions). For a single bias-free convolution it
is the kernel-slice convolution ``(A_i ⋆ W[j, i])`` evaluated at ``j``'s peak position.

How it runs, per batch of images: one forward pass up to the target layer only (the rest of the
network is skipped), with the source layer's output replaced by a leaf tensor that requires grad
(the layers before it run without autograd); then one batched vector-Jacobian product per chunk of
targets (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. ``vmap`` over one-hot cotangents
placed on each image's peak). Measured on the demo model (benchmarks/pathways_influence.py): 6–10× faster
than a forward and backward pass of the whole network per target; on the CPU the profile shows ``vmap``
running the convolution backward once per target inside (torch 2.13), and forward mode over source channels
(``torch.func.jvp`` under ``vmap``) measured the same, so the saving is the shared forward, stopped at the
target, and one autograd call per chunk. Images never interact (the adapter keeps the network in eval mode),
so the result of an image does not depend on the batch it is in. The peak is the first maximal
position in row-major order (``argmax``); the gradient of ``max`` is taken there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from advlens.errors import ModelError
from advlens.models.adapter import AnalysedModel

DEFAULT_BATCH = 64
DEFAULT_ELEMENTS = 2 ** 25
"""Largest cotangent / gradient (targets × images × layer elements) one batched backward may hold."""


class _ReachedTarget(Exception):
    """Raised from the target layer's tap to end the forward pass there."""


def _channel_index(selection: Sequence[int] | None, count: int, what: str, layer: str) -> torch.Tensor:
    if selection is None:
        return torch.arange(count)
    try:
        index = torch.as_tensor(list(selection), dtype=torch.long)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{what} must be a sequence of channel ids of {layer!r}, got {selection!r}") from exc
    if index.ndim != 1 or index.numel() == 0:
        raise ModelError(f"{what} must be a non-empty list of channel ids of {layer!r}, got {selection!r}")
    if int(index.min()) < 0 or int(index.max()) >= count:
        raise ModelError(f"{what} must be channel ids of {layer!r} in 0 … {count - 1}, got {list(selection)!r}")
    return index


def _layers(model: AnalysedModel, source_layer: str, target_layer: str) -> tuple[str, str]:
    graph = model.graph
    source, target = graph.resolve(source_layer), graph.resolve(target_layer)
    if source == target or not graph.reaches(source, target):
        raise ModelError(f"no path leads from {source_layer!r} to {target_layer!r}: the source layer must come "
                         "before the target layer and feed it")
    for name in (source, target):
        if len(graph[name].shape) < 1:
            raise ModelError(f"layer {name!r} has no channels")
    return source, target


def _forward_to_target(model: AnalysedModel, images: torch.Tensor, source: str,
                       target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The source output as a grad-requiring leaf and the target output computed from it.

    Shape:
        images: (n, C, H, W) → (n, C_src, …), (n, C_tgt, …).
    """
    kept: dict[str, torch.Tensor] = {}

    def from_leaf(value: torch.Tensor) -> torch.Tensor:
        leaf = value.detach().requires_grad_(True)
        kept["source"] = leaf
        torch.set_grad_enabled(True)  # autograd from here on; the enclosing no_grad restores the mode
        return leaf.clone()  # later in-place ops (ReLU(inplace=True)) must not write into the leaf

    def stop(value: torch.Tensor) -> torch.Tensor:
        kept["target"] = value
        raise _ReachedTarget

    try:
        with torch.no_grad(), model.tapping((), replace={source: from_leaf, target: stop}):
            model(images)
    except _ReachedTarget:
        pass
    if "target" not in kept or "source" not in kept:
        raise ModelError(f"layers {source!r} and {target!r} did not both run in the forward pass")
    return kept["source"], kept["target"]


def grad_x_act_influence(model: AnalysedModel, images: torch.Tensor, source_layer: str, target_layer: str,
                         targets: Sequence[int], source_channels: Sequence[int] | None = None,
                         batch_size: int = DEFAULT_BATCH, max_elements: int = DEFAULT_ELEMENTS) -> torch.Tensor:
    """Per image, the gradient × activation influence of source channels on target channels' peaks.

    Args:
        model: the analysed model (pixel input).
        images: pixels in [0, 1], on any device (batches move to the model's device).
        source_layer, target_layer: layer names of ``model.graph``; the source must feed the target.
        targets: target channel ids, in the order of the output's axis 1.
        source_channels: source channel ids (default: all), in the order of the output's axis 2.
        batch_size: images per forward pass.
        max_elements: memory bound of one batched backward; targets are chunked below it.

    Returns:
        float32 on the CPU.

    Raises:
        ModelError: unknown or unconnected layers, channel ids out of range, bad images — before any
            forward pass.

    Shape:
        images: (N, C, H, W) → (N, len(targets), len(source_channels) or C_source).
    """
    source, target = _layers(model, source_layer, target_layer)
    target_index = _channel_index(targets, model.graph[target].channels, "targets", target)
    source_index = None if source_channels is None else _channel_index(
        source_channels, model.graph[source].channels, "source_channels", source)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ModelError(f"batch_size must be a positive integer, got {batch_size!r}")
    images = torch.as_tensor(images)
    model.check_input(images)
    sources = model.graph[source].channels if source_index is None else len(source_index)
    result = torch.empty((len(images), len(target_index), sources), dtype=torch.float32)
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(model.device, model.mean.dtype)
        result[start:start + len(batch)] = _batch_influence(model, batch, source, target, target_index,
                                                            source_index, max_elements).cpu()
    return result


def _batch_influence(model: AnalysedModel, images: torch.Tensor, source: str, target: str,
                     target_index: torch.Tensor, source_index: torch.Tensor | None,
                     max_elements: int) -> torch.Tensor:
    """Shape: images (n, C, H, W) → (n, T, S)."""
    leaf, output = _forward_to_target(model, images, source, target)
    count = len(images)
    with torch.enable_grad():  # also when the caller runs under torch.no_grad()
        flat = output.reshape(count, output.shape[1], -1)
    target_index = target_index.to(flat.device)
    peaks = flat.detach()[:, target_index].argmax(dim=-1)  # (n, T): first maximal position
    active = leaf.detach() if source_index is None else leaf.detach()[:, source_index.to(leaf.device)]
    per_target = count * max(flat[0].numel(), leaf[0].numel())
    step = max(1, min(len(target_index), max_elements // max(1, per_target)))
    rows = torch.arange(count, device=flat.device)
    pieces = []
    for t0 in range(0, len(target_index), step):
        chunk = torch.arange(t0, min(t0 + step, len(target_index)), device=flat.device)
        cotangent = torch.zeros((len(chunk), *flat.shape), dtype=flat.dtype, device=flat.device)
        cotangent[torch.arange(len(chunk), device=flat.device)[:, None], rows[None, :],
                  target_index[chunk][:, None], peaks[:, chunk].T] = 1.0
        (grads,) = torch.autograd.grad(flat, leaf, cotangent, retain_graph=t0 + step < len(target_index),
                                       is_grads_batched=True)
        if source_index is not None:
            grads = grads[:, :, source_index.to(grads.device)]
        pieces.append((grads * active).reshape(len(chunk), count, active.shape[1], -1).sum(-1))
    return torch.cat(pieces).transpose(0, 1)
