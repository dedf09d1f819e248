"""The model adapter: pixel-space input, layer lookup and hook handling in one place.

Every computation in advlens talks to a network through :class:`AnalysedModel`. It owns the
input normalization (attacks and measures work on pixels in [0, 1]), knows the analysed layer
(whose feature maps are the "neurons"), the penultimate vector (the dense layer's input) and the
dense layer's weights. Hooks are registered inside ``try/finally`` and always removed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from advlens.errors import ModelError


@dataclass(frozen=True)
class Activations:
    """The tensors one forward pass records.

    Shape:
        logits: (N, num_classes); pooled: (N, D) the dense layer's input;
        feature_maps: (N, K, h, w) the analysed layer's output (None when not requested).
    """

    logits: torch.Tensor
    pooled: torch.Tensor
    feature_maps: torch.Tensor | None


def find_module(net: nn.Module, name: str) -> nn.Module:
    """Return the submodule with dotted name ``name``; unknown names list the candidates."""
    modules = dict(net.named_modules())
    if name not in modules:
        spatial = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise ModelError(
            f"no layer named {name!r} in the model; convolutional layers are: {', '.join(spatial[-12:])}"
        )
    return modules[name]


@contextmanager
def recording(modules: dict[str, nn.Module], inputs: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record each module's output (or first input) into a dict while the context is open.

    Hooks are removed on exit, also when the forward pass raises.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for key, module in modules.items():
            if inputs:
                def pre_hook(_m, args, _key=key):
                    store[_key] = args[0]
                handles.append(module.register_forward_pre_hook(pre_hook))
            else:
                def hook(_m, _args, output, _key=key):
                    store[_key] = output
                handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def trace_layers(net: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, torch.Size]]:
    """Modules in the order their forward passes finish, with their output shapes."""
    order: list[tuple[str, nn.Module, torch.Size]] = []
    handles = []
    try:
        for name, module in net.named_modules():
            if not name:
                continue

            def hook(m, _args, output, _name=name):
                if isinstance(output, torch.Tensor):
                    order.append((_name, m, output.shape))
            handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            net(example)
    finally:
        for handle in handles:
            handle.remove()
    return order


class AnalysedModel(nn.Module):
    """A classifier in pixel space with a designated analysed layer and dense head.

    Args:
        net: the classifier, taking normalized input and returning logits.
        mean, std: per-channel normalization applied inside ``forward``.
        input_shape: (C, H, W) of one image.
        class_names: one name per output.
        analysed_layer: dotted module name whose output are the analysed feature maps; default: the
            last module whose output is a spatial map (N×K×h×w, h·w > 1) in execution order, i.e. the
            last convolutional stage as it feeds the global pooling.
        dense_layer: dotted name of the final ``nn.Linear``; default: the last ``nn.Linear`` executed.
            Its input is the penultimate ("pooled") vector.

    Shape:
        forward input: (N, C, H, W) in [0, 1]; output: logits (N, num_classes).
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_shape: tuple[int, int, int], class_names: Sequence[str],
                 analysed_layer: str | None = None, dense_layer: str | None = None,
                 spec: str = "custom") -> None:
        super().__init__()
        channels = input_shape[0]
        if len(mean) != channels or len(std) != channels:
            raise ModelError(f"normalization has {len(mean)} means / {len(std)} stds for {channels} channels")
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.input_shape = tuple(input_shape)
        self.class_names = tuple(class_names)
        self.spec = spec
        order = trace_layers(self.net, torch.zeros(1, *input_shape))
        self.dense_layer_name = dense_layer or self._default_dense(order)
        self.analysed_layer_name = analysed_layer or self._default_analysed(order)
        dense = find_module(self.net, self.dense_layer_name)
        if not isinstance(dense, nn.Linear):
            raise ModelError(f"dense layer {self.dense_layer_name!r} is a {type(dense).__name__}, not nn.Linear")
        if dense.out_features != len(self.class_names):
            raise ModelError(
                f"the model predicts {dense.out_features} classes but {len(self.class_names)} class names were "
                "given: the model does not match the dataset"
            )
        find_module(self.net, self.analysed_layer_name)
        self.eval()

    @staticmethod
    def _default_dense(order: list[tuple[str, nn.Module, torch.Size]]) -> str:
        linear = [name for name, module, _ in order if isinstance(module, nn.Linear)]
        if not linear:
            raise ModelError("the model has no nn.Linear head; pass dense_layer= with the classifier's name")
        return linear[-1]

    @staticmethod
    def _default_analysed(order: list[tuple[str, nn.Module, torch.Size]]) -> str:
        spatial = [name for name, _, shape in order if len(shape) == 4 and shape[2] * shape[3] > 1]
        if not spatial:
            raise ModelError("the model has no layer with spatial feature maps; pass analysed_layer=")
        return spatial[-1]

    def train(self, mode: bool = True) -> AnalysedModel:
        """The adapter stays in eval mode: analysis never trains batch-norm statistics."""
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dense(self) -> nn.Linear:
        return find_module(self.net, self.dense_layer_name)  # type: ignore[return-value]

    @property
    def dense_weight(self) -> torch.Tensor:
        """Shape: (num_classes, D)."""
        return self.dense.weight.detach()

    @property
    def dense_bias(self) -> torch.Tensor:
        """Shape: (num_classes,); zeros when the dense layer has no bias."""
        bias = self.dense.bias
        return bias.detach() if bias is not None else torch.zeros(self.num_classes, device=self.mean.device)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Shape: (N, C, H, W) in [0, 1] → same shape, normalized."""
        return (images - self.mean) / self.std

    def check_input(self, images: torch.Tensor) -> None:
        """Raise ModelError unless ``images`` is N×C×H×W with this model's C, H, W."""
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ModelError(
                f"the model expects images of shape N×{'×'.join(map(str, self.input_shape))}, "
                f"got {tuple(images.shape)}"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))

    def activations(self, images: torch.Tensor, feature_maps: bool = True) -> Activations:
        """One forward pass recording logits, the pooled vector and (optionally) the analysed maps.

        Shape:
            images: (N, C, H, W) in [0, 1].
        """
        self.check_input(images)
        with recording({"pooled": self.dense}, inputs=True) as pooled, \
                recording({"maps": find_module(self.net, self.analysed_layer_name)} if feature_maps else {}) as maps:
            logits = self.forward(images)
        return Activations(logits, pooled["pooled"].flatten(1), maps.get("maps"))

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Apply the dense head to penultimate vectors. Shape: (N, D) → (N, num_classes)."""
        return self.dense(pooled)
