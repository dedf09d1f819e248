"""Bluff's connection influence through one convolution (paper 004 §3.2; spec-004 §5 ``kernel``).

For source channel ``i`` and output channel ``j`` of a convolution with weight ``W``, the signal image
``x`` sends through the connection is ``max_{h,w} (A_i ⋆ W[j, i])[h, w]``: the spatial maximum of the
source map convolved with the one kernel slice, with the layer's real stride, padding (and padding
mode), dilation and groups, without bias. Unlike Bluff's code (stride 3, no padding) it is the slice of
the computation the layer really does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from advlens.errors import ModelError

DEFAULT_ELEMENTS = 2 ** 25
"""Largest intermediate (images × pairs × output positions) one grouped convolution call may produce."""


def _channels(selection: Sequence[int] | None, count: int, what: str) -> torch.Tensor:
    if selection is None:
        return torch.arange(count)
    index = torch.as_tensor(list(selection), dtype=torch.long)
    if index.ndim != 1 or (index.numel() and (int(index.min()) < 0 or int(index.max()) >= count)):
        raise ModelError(f"{what} must be channel ids in 0 … {count - 1}, got {list(selection)!r}")
    return index


def kernel_influence(source: torch.Tensor, conv: nn.Conv2d, targets: Sequence[int] | None = None,
                     source_channels: Sequence[int] | None = None,
                     max_elements: int = DEFAULT_ELEMENTS) -> torch.Tensor:
    """Per image, the spatial max of each source channel convolved with each kernel slice.

    Batched: each chunk of images is one grouped ``conv2d`` call — for a dense convolution each source
    channel convolved with its kernel slices toward all targets (groups = sources); for a grouped
    convolution only the connected pairs (one depthwise channel each). Pairs a grouped convolution does
    not connect get 0.

    Args:
        source: the activations the convolution reads (its input layer's output).
        conv: the convolution joining the two layers (see
            :func:`~advlens.pathways.layers.joining_convolution`).
        targets: output channels to compute (default: all ``C_out``), in the order given.
        source_channels: input channels to compute (default: all ``C_in``), in the order given.
        max_elements: memory bound of one call's output; images are processed in chunks below it.

    Returns:
        float32 on ``source``'s device.

    Shape:
        source: (N, C_in, H, W) → (N, len(targets) or C_out, len(source_channels) or C_in).
    """
    if not isinstance(conv, nn.Conv2d):
        raise ModelError(f"kernel_influence needs an nn.Conv2d, got {type(conv).__name__}; use grad_x_act_influence "
                         "for layers not joined by one convolution")
    if not isinstance(source, torch.Tensor) or source.ndim != 4 or source.shape[1] != conv.in_channels:
        shape = tuple(source.shape) if isinstance(source, torch.Tensor) else type(source).__name__
        raise ModelError(f"source activations must be (N, {conv.in_channels}, H, W) for this convolution, got {shape}")
    outs = _channels(targets, conv.out_channels, "targets")
    ins = _channels(source_channels, conv.in_channels, "source_channels")
    weight = conv.weight.detach().to(source.device, source.dtype)
    inputs, padding = source.detach(), conv.padding
    if conv.padding_mode != "zeros":  # as nn.Conv2d._conv_forward does
        inputs = F.pad(inputs, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    result = source.new_zeros((source.shape[0], len(outs), len(ins)))
    if source.shape[0] == 0:
        return result
    positions = max(1, _output_positions(inputs.shape[-2:], conv, padding))
    with torch.no_grad():
        if conv.groups == 1:
            _by_source(inputs, weight, outs, ins, conv, padding, positions, max_elements, result)
        else:
            _by_pair(inputs, weight, outs, ins, conv, padding, positions, max_elements, result)
    return result


def _by_source(inputs: torch.Tensor, weight: torch.Tensor, outs: torch.Tensor, ins: torch.Tensor, conv: nn.Conv2d,
               padding, positions: int, max_elements: int, result: torch.Tensor) -> None:
    """Dense convolution: each source channel convolved with its T kernel slices, one grouped call
    (groups = sources) per chunk of sources and images. Fills ``result`` (N, T, S)."""
    targets = len(outs)
    source_step = max(1, min(len(ins), max_elements // (targets * positions)))
    for s0 in range(0, len(ins), source_step):
        chunk = ins[s0:s0 + source_step]
        slices = weight[outs][:, chunk].transpose(0, 1).reshape(len(chunk) * targets, 1, *weight.shape[2:])
        image_step = max(1, max_elements // (len(chunk) * targets * positions))
        for n0 in range(0, inputs.shape[0], image_step):
            x = inputs[n0:n0 + image_step].index_select(1, chunk.to(inputs.device))  # (n, S', H, W)
            y = F.conv2d(x, slices, None, conv.stride, padding, conv.dilation, groups=len(chunk))
            peaks = y.amax(dim=(2, 3)).view(len(x), len(chunk), targets)
            result[n0:n0 + len(x), :, s0:s0 + len(chunk)] = peaks.transpose(1, 2)


def _by_pair(inputs: torch.Tensor, weight: torch.Tensor, outs: torch.Tensor, ins: torch.Tensor, conv: nn.Conv2d,
             padding, positions: int, max_elements: int, result: torch.Tensor) -> None:
    """Grouped convolution: only the connected (target, source) pairs, one depthwise call per chunk of
    pairs and images (the source map repeated per pair). Unconnected pairs stay 0 in ``result``."""
    per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    t_grid, s_grid = torch.meshgrid(torch.arange(len(outs)), torch.arange(len(ins)), indexing="ij")
    t_grid, s_grid = t_grid.reshape(-1), s_grid.reshape(-1)
    connected = (outs[t_grid] // per_out) == (ins[s_grid] // per_in)
    t_grid, s_grid = t_grid[connected], s_grid[connected]
    slices = weight[outs[t_grid], ins[s_grid] % per_in].unsqueeze(1)  # (P, 1, kh, kw)
    pair_step = max(1, min(len(slices), max_elements // positions))
    for p0 in range(0, len(slices), pair_step):
        chunk = slice(p0, p0 + pair_step)
        sources = ins[s_grid[chunk]].to(inputs.device)
        image_step = max(1, max_elements // (len(sources) * positions))
        for n0 in range(0, inputs.shape[0], image_step):
            x = inputs[n0:n0 + image_step].index_select(1, sources)  # (n, P', H, W): one map per pair
            y = F.conv2d(x, slices[chunk], None, conv.stride, padding, conv.dilation, groups=len(sources))
            result[n0:n0 + len(x), t_grid[chunk], s_grid[chunk]] = y.amax(dim=(2, 3))


def _output_positions(size: torch.Size, conv: nn.Conv2d, padding) -> int:
    """Number of output positions of ``conv`` on an input of spatial ``size``."""
    if isinstance(padding, str):
        if padding == "same":
            return int(size[0] * size[1])
        padding = (0, 0)
    if isinstance(padding, int):
        padding = (padding, padding)
    count = 1
    for length, pad, dilation, kernel, stride in zip(size, padding, conv.dilation, conv.kernel_size, conv.stride):
        count *= max(0, (length + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1)
    return count
