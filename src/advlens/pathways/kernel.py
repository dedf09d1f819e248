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

    Every connected (target j, source i) pair becomes one channel of a single depthwise (grouped)
    convolution call per chunk of images; pairs a grouped convolution does not connect get 0.

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
    per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    # connected pairs (t, s) of the requested targets × sources: same group of the grouped convolution
    t_grid, s_grid = torch.meshgrid(torch.arange(len(outs)), torch.arange(len(ins)), indexing="ij")
    t_grid, s_grid = t_grid.reshape(-1), s_grid.reshape(-1)
    connected = (outs[t_grid] // per_out) == (ins[s_grid] // per_in)
    t_grid, s_grid = t_grid[connected], s_grid[connected]
    result = source.new_zeros((source.shape[0], len(outs), len(ins)))
    if t_grid.numel() == 0 or source.shape[0] == 0:
        return result
    slices = weight[outs[t_grid], ins[s_grid] % per_in].unsqueeze(1)  # (P, 1, kh, kw)
    inputs = source.detach()
    padding = conv.padding
    if conv.padding_mode != "zeros":  # as nn.Conv2d._conv_forward does
        inputs = F.pad(inputs, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    positions = _output_positions(inputs.shape[-2:], conv, padding)
    pairs = slices.shape[0]
    pair_step = max(1, min(pairs, max_elements // max(1, positions)))
    image_step = max(1, max_elements // max(1, pair_step * positions))
    with torch.no_grad():
        for p0 in range(0, pairs, pair_step):
            chunk = slice(p0, p0 + pair_step)
            sources = ins[s_grid[chunk]].to(source.device)
            for n0 in range(0, source.shape[0], image_step):
                x = inputs[n0:n0 + image_step].index_select(1, sources)  # (n, P, H, W): one map per pair
                y = F.conv2d(x, slices[chunk], None, conv.stride, padding, conv.dilation, groups=x.shape[1])
                result[n0:n0 + image_step, t_grid[chunk], s_grid[chunk]] = y.amax(dim=(2, 3))
    return result


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
