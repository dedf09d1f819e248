"""Theoretical receptive fields: how each layer maps its input positions to its output positions.

Every layer gets a :class:`Step` (from its module, its function and arguments, or its input and
output shapes). Composing the steps from the input to a layer gives that layer's
:class:`ReceptiveField`: the input window of its unit (0, 0), the window size and the jump (the
input distance between two neighbouring units). Where paths merge (a residual add, a concat), the
field is the union of the inputs' fields ("max over paths").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from advlens.errors import ModelError

Pair = tuple[int, int]
_PAD_TYPES = (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
              nn.modules.padding._ReplicationPadNd)
_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)
_ADAPTIVE_TYPES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_UPSAMPLING_TYPES = (nn.modules.conv._ConvTransposeNd, nn.Upsample, nn.PixelShuffle, nn.MaxUnpool2d)


@dataclass(frozen=True)
class Step:
    """What one layer does to positions, per spatial axis (y, x).

    ``kind`` is ``same`` (position-wise: norm, activation, add), ``window`` (a convolution or
    pooling: unit i reads input units ``i·stride − pad … i·stride − pad + kernel − 1``, kernel
    including dilation), ``global`` (every output reads every input position) or ``unknown``.
    """

    kind: str
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    pad: Pair = (0, 0)
    note: str = ""


SAME = Step("same")
GLOBAL = Step("global")


@dataclass(frozen=True)
class ReceptiveField:
    """The input window each unit of a spatial layer sees.

    Unit (i, j) covers input rows ``start[0] + i·jump[0] … start[0] + i·jump[0] + size[0] − 1``
    and columns likewise (``start`` is negative where the window reaches into padding).
    ``whole`` marks a layer whose every unit depends on the whole image (e.g. after a global pool).
    """

    size: Pair
    jump: Pair
    start: Pair
    input_size: Pair
    whole: bool = False

    def window(self, i: int, j: int, clip: bool = True) -> tuple[int, int, int, int]:
        """Half-open input bounds ``(top, bottom, left, right)`` of unit (i, j), clipped to the image."""
        if self.whole:
            return 0, self.input_size[0], 0, self.input_size[1]
        top, left = self.start[0] + i * self.jump[0], self.start[1] + j * self.jump[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if clip:
            top, left = max(top, 0), max(left, 0)
            bottom, right = min(bottom, self.input_size[0]), min(right, self.input_size[1])
        return top, bottom, left, right

    def slices(self, i: int, j: int) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of unit (i, j)'s clipped window, for ``image[..., rows, cols]``."""
        top, bottom, left, right = self.window(i, j)
        return slice(top, bottom), slice(left, right)

    def center(self, i: int, j: int) -> tuple[float, float]:
        """Input coordinates (y, x) of the centre of unit (i, j)'s (unclipped) window."""
        top, bottom, left, right = self.window(i, j, clip=False)
        return (top + bottom - 1) / 2, (left + right - 1) / 2


@dataclass(frozen=True)
class _Axis:
    start: int
    size: int
    jump: int
    whole: bool = False


def _pair(value, name: str = "") -> Pair:
    if isinstance(value, int):
        return value, value
    values = tuple(value)
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) != 2:
        raise ValueError(f"{name or 'value'} {value!r} is not 2-D")
    return int(values[0]), int(values[1])


def _window(kernel, stride, padding, dilation, in_hw: Pair | None, out_hw: Pair | None,
            extra_before: Pair = (0, 0), extra_total: Pair = (0, 0), check_shape: bool = True) -> Step:
    """A conv/pool step; padding the module applies inside ``forward`` is found from the shapes."""
    k, d = _pair(kernel, "kernel"), _pair(dilation, "dilation")
    s = _pair(stride if stride is not None else kernel, "stride")
    if isinstance(padding, str):
        total = tuple(di * (ki - 1) if padding == "same" else 0 for ki, di in zip(k, d))
        p = tuple(t // 2 for t in total)
        pad_total = total
    else:
        p = _pair(padding, "padding")
        pad_total = (2 * p[0], 2 * p[1])
    k_eff = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d))
    before = [p[a] + extra_before[a] for a in range(2)]
    if check_shape and in_hw is not None and out_hw is not None:
        for a in range(2):
            expected = (in_hw[a] + pad_total[a] + extra_total[a] - k_eff[a]) // s[a] + 1
            if out_hw[a] > expected:  # "same" padding computed inside forward (TensorFlow style)
                missing = (out_hw[a] - 1) * s[a] + k_eff[a] - in_hw[a] - pad_total[a] - extra_total[a]
                before[a] += missing // 2
    return Step("window", k_eff, s, (before[0], before[1]))


def _adaptive(in_hw: Pair | None, out_hw: Pair | None) -> Step:
    if in_hw is None or out_hw is None:
        return Step("unknown", note="adaptive pooling without shapes")
    if out_hw == (1, 1):
        return GLOBAL
    kernel, stride = [], []
    for size_in, size_out in zip(in_hw, out_hw):
        longest = max(math.ceil((i + 1) * size_in / size_out) - (i * size_in) // size_out for i in range(size_out))
        kernel.append(longest)
        stride.append(max(size_in // size_out, 1))
    return Step("window", (kernel[0], kernel[1]), (stride[0], stride[1]), (0, 0),
                note="" if all(i % o == 0 for i, o in zip(in_hw, out_hw)) else "approximate (uneven bins)")


def from_shapes(in_hw: Pair | None, out_hw: Pair | None) -> Step:
    """Step of an op known only by its shapes: position-wise, global, or an even pooling."""
    if in_hw is None or out_hw is None or in_hw == out_hw:
        return SAME
    if out_hw == (1, 1):
        return GLOBAL
    if all(i % o == 0 for i, o in zip(in_hw, out_hw)):
        kernel = (in_hw[0] // out_hw[0], in_hw[1] // out_hw[1])
        return Step("window", kernel, kernel, (0, 0), note="inferred from shapes")
    return Step("unknown", note=f"changes the spatial size {in_hw} → {out_hw} in an unknown way")


def module_step(module: nn.Module, in_hw: Pair | None, out_hw: Pair | None) -> Step:
    """The step of a module called as one layer."""
    if isinstance(module, _UPSAMPLING_TYPES):
        return Step("unknown", note=f"{type(module).__name__} upsamples")
    if isinstance(module, nn.modules.conv._ConvNd) and len(module.kernel_size) == 2:
        before, total = (0, 0), (0, 0)
        static = getattr(module, "static_padding", None)  # TensorFlow-"same" convs (EfficientNet)
        if isinstance(static, _PAD_TYPES) and len(static.padding) == 4:
            left, right, top, bottom = static.padding
            before, total = (top, left), (top + bottom, left + right)
        return _window(module.kernel_size, module.stride, module.padding, module.dilation, in_hw, out_hw,
                       before, total)
    if isinstance(module, _POOL_TYPES):
        dilation = getattr(module, "dilation", 1)
        padding = getattr(module, "padding", 0)
        ceil_mode = getattr(module, "ceil_mode", False)
        return _window(module.kernel_size, module.stride, padding, dilation, in_hw, out_hw,
                       check_shape=not ceil_mode)
    if isinstance(module, _ADAPTIVE_TYPES):
        return _adaptive(in_hw, out_hw)
    if isinstance(module, _PAD_TYPES) and len(module.padding) == 4:
        left, _, top, _ = module.padding
        return Step("window", (1, 1), (1, 1), (top, left))
    return from_shapes(in_hw, out_hw)


def opaque_step(module: nn.Module, in_hw: Pair | None, out_hw: Pair | None) -> Step:
    """A module torch.fx could not trace into: its conv/pool children composed as a chain."""
    steps = [module_step(m, None, None) for m in module.modules()
             if m is not module and isinstance(m, (nn.modules.conv._ConvNd, *_POOL_TYPES, *_PAD_TYPES))]
    if not steps:
        return from_shapes(in_hw, out_hw)
    axes = [_Axis(0, 1, 1), _Axis(0, 1, 1)]
    for step in steps:
        axes = _apply(step, axes)
    return Step("window", (axes[0].size, axes[1].size), (axes[0].jump, axes[1].jump),
                (-axes[0].start, -axes[1].start), note="approximate (children of an opaque module as a chain)")


_FUNCTION_WINDOWS = {"max_pool2d", "avg_pool2d", "lp_pool2d"}


def function_step(name: str, args: Sequence, kwargs: dict, in_hw: Pair | None, out_hw: Pair | None,
                  weight_shape: Sequence[int] | None = None) -> Step:
    """The step of a functional op (``F.conv2d``, ``F.max_pool2d``, ``F.pad`` …) from its arguments."""
    def arg(index: int, key: str, default):
        if key in kwargs:
            return kwargs[key]
        return args[index] if len(args) > index else default

    try:
        if name == "conv2d" and weight_shape is not None and len(weight_shape) == 4:
            return _window(tuple(weight_shape[2:]), arg(3, "stride", 1), arg(4, "padding", 0),
                           arg(5, "dilation", 1), in_hw, out_hw)
        if name in _FUNCTION_WINDOWS:
            kernel = arg(1, "kernel_size", None)
            if name == "lp_pool2d":
                kernel = arg(2, "kernel_size", None)
                return _window(kernel, arg(3, "stride", None), 0, 1, in_hw, out_hw)
            dilation = arg(4, "dilation", 1) if name == "max_pool2d" else 1
            return _window(kernel, arg(2, "stride", None), arg(3, "padding", 0), dilation, in_hw, out_hw,
                           check_shape=not arg(5 if name == "max_pool2d" else 4, "ceil_mode", False))
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            return _adaptive(in_hw, out_hw)
        if name == "pad":
            pad = tuple(arg(1, "pad", ()))
            if len(pad) >= 4:
                return Step("window", (1, 1), (1, 1), (int(pad[2]), int(pad[0])))
        if name in ("interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "conv_transpose2d",
                    "pixel_shuffle"):
            return Step("unknown", note=f"{name} upsamples")
    except (TypeError, ValueError) as exc:  # a symbolic argument: fall back to the shapes
        return Step("unknown", note=f"{name}: {exc}") if in_hw != out_hw else SAME
    return from_shapes(in_hw, out_hw)


def _apply(step: Step, axes: list[_Axis]) -> list[_Axis]:
    if step.kind == "same":
        return axes
    if step.kind == "global":
        return [_Axis(0, 0, a.jump, True) for a in axes]
    if step.kind == "window":
        return [a if a.whole else _Axis(a.start - step.pad[i] * a.jump, a.size + (step.kernel[i] - 1) * a.jump,
                                        a.jump * step.stride[i])
                for i, a in enumerate(axes)]
    raise ModelError(f"receptive field unknown: {step.note or 'unsupported layer'}")


def _union(fields: list[list[_Axis]]) -> list[_Axis]:
    result = []
    for axis in zip(*fields):
        if any(a.whole for a in axis):
            result.append(_Axis(0, 0, max(a.jump for a in axis), True))
            continue
        start = min(a.start for a in axis)
        end = max(a.start + a.size for a in axis)
        result.append(_Axis(start, end - start, max(a.jump for a in axis)))
    return result


def compose(order: Sequence[str], inputs: dict[str, Sequence[str]], steps: dict[str, Step],
            spatial: dict[str, bool], source: str) -> dict[str, list[_Axis] | Exception]:
    """Fields of every node in topological ``order``, starting from ``source`` (the image)."""
    fields: dict[str, list[_Axis] | Exception] = {source: [_Axis(0, 1, 1), _Axis(0, 1, 1)]}
    for name in order:
        if name == source:
            continue
        parents = [p for p in inputs[name] if p in fields]
        try:
            parent_fields = []
            for parent in parents:
                field = fields[parent]
                if isinstance(field, Exception):
                    raise field
                if not spatial[parent]:
                    field = [_Axis(0, 0, 1, True)] * 2  # a vector: every entry may read every position
                parent_fields.append(field)
            if not parent_fields:
                fields[name] = [_Axis(0, 0, 1, True)] * 2
                continue
            fields[name] = _apply(steps[name], _union(parent_fields))
        except ModelError as exc:
            fields[name] = exc
    return fields


def to_receptive_field(axes: list[_Axis], input_size: Pair) -> ReceptiveField:
    whole = any(a.whole for a in axes)
    return ReceptiveField(size=(axes[0].size, axes[1].size) if not whole else input_size,
                          jump=(axes[0].jump, axes[1].jump), start=(axes[0].start, axes[1].start) if not whole
                          else (0, 0), input_size=input_size, whole=whole)
