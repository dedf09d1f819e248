"""The model adapter: pixel-space input, the model graph, multi-layer capture and tap points.

Every computation in advlens talks to a network through :class:`AnalysedModel`. It owns the
input normalization (attacks and measures work on pixels in [0, 1]), the model graph
(``model.graph``), the analysed layer (whose feature maps are the "neurons"), the penultimate
vector (the dense layer's input) and the dense layer's weights. It records many layers in one
forward pass (``capture``), keeps them live for gradients (``tapping``) and replaces a layer's
output (``patching``). Hooks are registered inside ``try/finally`` and always removed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from advlens.errors import AdvlensError, ModelError
from advlens.models.capture import REDUCTIONS, Taps, reduce_output
from advlens.models.graph import ModelGraph, build_graph

DEFAULT_CAPTURE_BATCH = 128
PROBE_IMAGES = 2
PROBE_SEED = 0


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

    Only forward passes of the thread that opened the context are recorded. Hooks are removed on
    exit, also when the forward pass raises.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    owner = threading.get_ident()
    try:
        for key, module in modules.items():
            if inputs:
                def pre_hook(_m, args, _key=key):
                    if threading.get_ident() == owner:
                        store[_key] = args[0]
                handles.append(module.register_forward_pre_hook(pre_hook))
            else:
                def hook(_m, _args, output, _key=key):
                    if threading.get_ident() == owner:
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

    At construction one probe forward (seeded random images) builds the model graph and verifies
    that the dense layer's input is the global (average or max) pooling of the analysed layer's
    maps, so a neuron id means the same channel in every measure; otherwise ``ModelError`` names
    both layers, their sizes and the layers that would work.

    Args:
        net: the classifier, taking normalized input and returning logits.
        mean, std: per-channel normalization applied inside ``forward``.
        input_shape: (C, H, W) of one image.
        class_names: one name per output.
        analysed_layer: layer name (see ``model.graph``) whose output are the analysed feature maps;
            default: the last layer whose global pooling is the dense layer's input, named by the
            outermost module that returns it (``layer4`` in a ResNet, ``_swish:1`` in EfficientNet).
        dense_layer: dotted name of the final ``nn.Linear``; default: the last ``nn.Linear`` executed.
            Its input is the penultimate ("pooled") vector.

    Attributes:
        pooling: ``mean`` or ``max``: how the analysed maps become the dense layer's input.

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
        try:
            graph = self.graph
        except AdvlensError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's model fails on its own input shape
            raise ModelError(f"the model fails on a probe batch of shape {PROBE_IMAGES}×"
                             f"{'×'.join(map(str, self.input_shape))}: {type(exc).__name__}: {exc}") from exc
        self.dense_layer_name = dense_layer or self._default_dense(graph)
        dense = find_module(self.net, self.dense_layer_name)
        if not isinstance(dense, nn.Linear):
            raise ModelError(f"dense layer {self.dense_layer_name!r} is a {type(dense).__name__}, not nn.Linear")
        if dense.out_features != len(self.class_names):
            raise ModelError(
                f"the model predicts {dense.out_features} classes but {len(self.class_names)} class names were "
                "given: the model does not match the dataset"
            )
        self.analysed_layer_name, self.pooling = self._choose_analysed(graph, analysed_layer)
        self.eval()

    # ------------------------------------------------------------------------------ graph and layers

    def probe_images(self) -> torch.Tensor:
        """The seeded random images of the construction-time probe. Shape: (2, C, H, W) in [0, 1]."""
        generator = torch.Generator().manual_seed(PROBE_SEED)
        return torch.rand((PROBE_IMAGES, *self.input_shape), generator=generator).to(self.device)

    @cached_property
    def graph(self) -> ModelGraph:
        """The network's layers as a DAG (torch.fx; fallback: module-hook order), built once."""
        with torch.no_grad():
            return build_graph(self.net, self.normalize(self.probe_images()[:1]))

    @cached_property
    def _taps(self) -> Taps:
        return Taps(self.net, self.graph)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("graph", None)  # rebuilt on demand: the fx copy holds closures bound to this object
        state.pop("_taps", None)
        return state

    @staticmethod
    def _default_dense(graph: ModelGraph) -> str:
        linear = [node.hook[0] for node in graph.nodes if node.op == "Linear" and node.hook is not None]
        if not linear:
            raise ModelError("the model has no nn.Linear head; pass dense_layer= with the classifier's name")
        return linear[-1]

    def _pooled_layers(self, graph: ModelGraph) -> dict[str, str]:
        """Layers whose global mean or max pooling equals the dense input on the probe: name → pooling."""
        width = self.dense.in_features
        same = [node.name for node in graph.nodes[1:] if node.spatial and node.channels == width]
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        observers = {name: [lambda v, _n=name: stats.__setitem__(_n, (v.mean(dim=(2, 3)), v.amax(dim=(2, 3))))]
                     for name in same}
        with torch.no_grad(), recording({"pooled": self.dense}, inputs=True) as pooled, \
                self._taps.attached(observers, live=False):
            self.forward(self.probe_images())
        target = pooled["pooled"].flatten(1)
        tolerance = 1e-5 * (1.0 + float(target.abs().max()))
        found: dict[str, str] = {}
        for name in same:
            for pooling, value in zip(("mean", "max"), stats[name]):
                if value.shape == target.shape and torch.allclose(value, target, rtol=1e-4, atol=tolerance):
                    found[name] = pooling
                    break
        return found

    def _choose_analysed(self, graph: ModelGraph, analysed_layer: str | None) -> tuple[str, str]:
        if not any(node.spatial for node in graph.nodes[1:]):  # the image itself does not count
            raise ModelError("the model has no layer with spatial feature maps; pass analysed_layer=")
        works = self._pooled_layers(graph)
        width = self.dense.in_features
        if analysed_layer is None:
            if not works:
                raise ModelError(
                    f"the input of the dense layer {self.dense_layer_name!r} ({width}-d) is not the global average "
                    "or max pooling of any layer's feature maps; advlens needs a classifier whose linear layer "
                    "reads pooled feature maps (name that layer with dense_layer=)")
            return graph.outermost_name(list(works)[-1]), works[list(works)[-1]]
        if analysed_layer not in graph:
            convs = [n.name for n in graph.nodes if n.kind == "weighted" and len(n.shape) == 3]
            raise ModelError(f"no layer named {analysed_layer!r} in the model; layers whose pooled maps feed the "
                             f"dense layer: {', '.join(works) or 'none'}; convolutional layers are: "
                             f"{', '.join(convs[-12:])}")
        node = graph[analysed_layer]
        if node.name not in works:
            size = (f"{node.channels} maps of {node.shape[1]}×{node.shape[2]}" if len(node.shape) == 3
                    else f"output of shape {tuple(node.shape)}")
            usable = (f"layers that would work: {', '.join(graph.outermost_name(n) for n in works)}" if works
                      else "no layer's pooled maps are the dense input")
            raise ModelError(
                f"analysed layer {analysed_layer!r} ({size}) does not feed the dense layer "
                f"{self.dense_layer_name!r} ({width} inputs): the dense input is not the global average or max "
                f"pooling of its maps, so one neuron id would name different neurons in different views; {usable}")
        return analysed_layer, works[node.name]

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
        x = self.normalize(images)
        taps = self.__dict__.get("_taps")
        if taps is not None and taps.active:
            return taps.run(x)
        return self.net(x)

    # ----------------------------------------------------------------------------------- recording

    def activations(self, images: torch.Tensor, feature_maps: bool = True) -> Activations:
        """One forward pass recording logits, the pooled vector and (optionally) the analysed maps.

        Shape:
            images: (N, C, H, W) in [0, 1].
        """
        self.check_input(images)
        maps: dict[str, torch.Tensor] = {}
        observers = {self.analysed_layer_name: [lambda v: maps.__setitem__("maps", v)]} if feature_maps else {}
        with recording({"pooled": self.dense}, inputs=True) as pooled, self._taps.attached(observers):
            logits = self.forward(images)
        return Activations(logits, pooled["pooled"].flatten(1), maps.get("maps"))

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Apply the dense head to penultimate vectors. Shape: (N, D) → (N, num_classes)."""
        return self.dense(pooled)

    def _layer_list(self, layers: str | Sequence[str], what: str) -> list[str]:
        names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        for name in names:
            if not isinstance(name, str):
                raise ModelError(f"{what}: layer names are strings, got {name!r}")
            self.graph.resolve(name)
        return names

    def capture(self, images: torch.Tensor, layers: str | Sequence[str], reduce: str = "none",
                batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """Record many layers, one forward pass per batch, without gradients.

        Args:
            images: pixels in [0, 1] (on any device; batches move to the model's device).
            layers: layer names or aliases (``model.graph.names()``), e.g. ``graph.activation_layers()``.
            reduce: ``none`` keeps the maps; ``max``, ``mean`` and ``abs_sum`` reduce each map over
                its spatial positions as it is computed (memory: N × C per layer).
            batch_size: images per forward pass (default 128).

        Returns:
            ``{layer: tensor}`` in the order asked, on the CPU (ready for a store), in the layer's dtype.

        Shape:
            images: (N, C, H, W). Each value: (N, C, H, W) for ``none``, (N, C) otherwise; a vector
            layer (N, D) is returned as it is.
        """
        if reduce not in REDUCTIONS:
            raise ModelError(f"unknown reduce {reduce!r}; use one of {', '.join(REDUCTIONS)}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ModelError(f"batch_size must be a positive integer, got {batch_size!r}")
        names = self._layer_list(layers, "capture")
        if not names:
            raise ModelError("capture needs at least one layer name (see model.graph.names())")
        images = torch.as_tensor(images)
        self.check_input(images)
        total, step = len(images), batch_size or DEFAULT_CAPTURE_BATCH
        out: dict[str, torch.Tensor] = {}
        rows = [0, 0]

        def observer(name: str) -> Callable[[torch.Tensor], None]:
            def observe(value: torch.Tensor) -> None:
                reduced = reduce_output(value.detach(), reduce)
                if name not in out:
                    out[name] = torch.empty((total, *reduced.shape[1:]), dtype=reduced.dtype)
                out[name][rows[0]:rows[1]].copy_(reduced)
            return observe

        with torch.no_grad(), self._taps.attached({name: [observer(name)] for name in names}, live=False):
            for start in range(0, total, step):
                rows[:] = [start, min(start + step, total)]
                self.forward(images[start:start + step].to(self.device, self.mean.dtype))
        for name in names:
            if name not in out:
                if total:
                    raise ModelError(f"layer {name!r} did not run in the forward pass")
                shape = self.graph[name].shape
                out[name] = torch.empty((0, *(shape if reduce == "none" or len(shape) < 2 else shape[:1])))
        return {name: out[name] for name in names}

    @contextmanager
    def tapping(self, layers: str | Sequence[str] = (),
                replace: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
                ) -> Iterator[dict[str, torch.Tensor]]:
        """Keep layers' live outputs (autograd graph intact) and optionally replace outputs.

        Inside the block, run ``model(images)``: the yielded dict then holds each listed layer's
        output as the rest of the network sees it (after any replacement). ``replace`` maps a layer
        to a function of its output returning a tensor of the same shape (e.g. ``lambda a: a * gate``),
        which the network uses instead. Hooks are removed when the block ends, also on errors.

        Shape:
            each value: the layer's output (N, C, H, W) or (N, D) for the last forward pass.
        """
        names = self._layer_list(layers, "tapping")
        replace = dict(replace or {})
        for name, function in replace.items():
            self._layer_list(name, "tapping(replace=…)")
            if not callable(function):
                raise ModelError(f"replace[{name!r}] must be a function of the layer's output, got {function!r}")
        outputs: dict[str, torch.Tensor] = {}
        observers = {name: [lambda v, _n=name: outputs.__setitem__(_n, v)] for name in names}
        with self._taps.attached(observers, {name: [function] for name, function in replace.items()}):
            yield outputs

    @contextmanager
    def patching(self, layer: str, function: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Replace ``layer``'s output by ``function(output)`` in every forward pass inside the block."""
        with self.tapping((), {layer: function}):
            yield
