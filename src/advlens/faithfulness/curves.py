"""Patch curves: does changing a ranking's top-k channels of a layer change the prediction? (issue 13, item 1)

For a benign/adversarial pair, a layer and a channel ranking (best first), the curve holds the class
probabilities of one forward pass per k in which the top-k channels are patched:

* ``"insertion"``: the **benign** forward pass with the top-k channels given their **adversarial** maps
  (do these neurons alone carry the attack?);
* ``"restoration"``: the **adversarial** forward pass with the top-k channels given back their **benign**
  maps (does undoing these neurons undo the attack?).

At k = 0 nothing is patched, so the curve starts at the unpatched forward pass of the start image (benign
for insertion, adversarial for restoration). At k = all channels every channel of the layer holds the other
image's maps; that reproduces the other image's output only when the layer *alone* feeds the head — every
path from the input to the output passes through it (:func:`feeds_head_alone`: a ResNet's block outputs
``layer3``, ``layer4``, the analysed layer). A layer with a skip connection around it (``layer4.relu``,
inside a residual block) does not: the skip still carries the start image's values.

The forward passes are batched over pairs and over k: one forward per chunk of ``batch_size`` (pair, k)
items, never one per k. The patch goes through :meth:`AnalysedModel.patching`, whose hooks are removed
when the pass ends, also when it raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from advlens.errors import ConfigError, ModelError
from advlens.models import AnalysedModel
from advlens.models.tracing import INPUT_NAME

MODES = ("insertion", "restoration")
"""``insertion``: adversarial maps into the benign pass; ``restoration``: benign maps into the adversarial pass."""

DEFAULT_BATCH = 256
"""(pair, k) items per patched forward pass."""

DENSE_KS = 20
""":func:`default_ks` computes every k up to this one (the flips within the top 1/5/10/20 neurons)."""


@dataclass(frozen=True)
class PatchCurve:
    """Class probabilities of pairs as their top-k channels of ``layer`` are patched.

    Attributes:
        layer: the patched layer (graph name); mode: ``insertion`` or ``restoration``.
        channels: the layer's channels (k = ``channels`` patches every one).
        ks: the numbers of patched channels, ascending.
        probs: softmax of each patched forward pass.
        benign_probs, adversarial_probs: softmax of the unpatched benign and adversarial passes.

    Shape:
        ks: (n,) int64; probs: (P, n, num_classes) float32; benign_probs, adversarial_probs:
        (P, num_classes) float32; all on the CPU.
    """

    layer: str
    mode: str
    channels: int
    ks: np.ndarray
    probs: torch.Tensor
    benign_probs: torch.Tensor
    adversarial_probs: torch.Tensor

    @property
    def benign_class(self) -> torch.Tensor:
        """The unpatched benign prediction. Shape: (P,) int64."""
        return self.benign_probs.argmax(dim=1)

    @property
    def adversarial_class(self) -> torch.Tensor:
        """The unpatched adversarial prediction. Shape: (P,) int64."""
        return self.adversarial_probs.argmax(dim=1)

    @property
    def start_probs(self) -> torch.Tensor:
        """The unpatched pass the patches go into (benign for insertion). Shape: (P, num_classes)."""
        return self.benign_probs if self.mode == "insertion" else self.adversarial_probs

    @property
    def end_probs(self) -> torch.Tensor:
        """The unpatched pass of the image the patched maps come from. Shape: (P, num_classes)."""
        return self.adversarial_probs if self.mode == "insertion" else self.benign_probs

    @property
    def start_class(self) -> torch.Tensor:
        """The class predicted at k = 0. Shape: (P,) int64."""
        return self.start_probs.argmax(dim=1)

    @property
    def tracked_class(self) -> torch.Tensor:
        """The class whose probability the curve follows: the adversarial class rising (insertion), the
        benign class recovering (restoration). Shape: (P,) int64."""
        return self.end_probs.argmax(dim=1)

    def tracked(self) -> torch.Tensor:
        """Probability of :attr:`tracked_class` per k. Shape: (P, n)."""
        index = self.tracked_class[:, None, None].expand(-1, len(self.ks), 1)
        return self.probs.gather(2, index)[..., 0]

    def predictions(self) -> torch.Tensor:
        """The predicted class per k. Shape: (P, n) int64."""
        return self.probs.argmax(dim=2)

    def flipped(self) -> torch.Tensor:
        """Whether the prediction at k differs from the start class (insertion: the benign prediction is
        lost; restoration: the adversarial prediction is lost). Shape: (P, n) bool."""
        return self.predictions() != self.start_class[:, None]


def feeds_head_alone(model: AnalysedModel, layer: str) -> bool:
    """Whether every path from the input to the network's output passes through ``layer``.

    Exactly for such layers, patching all channels reproduces the other image's output.
    """
    graph = model.graph
    name = graph.resolve(layer)
    if name == INPUT_NAME or name == graph.output:
        return True
    children: dict[str, list[str]] = {}
    for node in graph.nodes:
        for parent in node.inputs:
            children.setdefault(parent, []).append(node.name)
    seen, frontier = {INPUT_NAME}, [INPUT_NAME]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child != name and child not in seen:
                seen.add(child)
                frontier.append(child)
    return graph.output not in seen


def _as_batch(images: torch.Tensor | np.ndarray, what: str, model: AnalysedModel) -> torch.Tensor:
    batch = torch.as_tensor(images)
    if batch.ndim == 3:
        batch = batch[None]
    if not batch.is_floating_point():
        raise ConfigError(f"{what} images must be float pixels in [0, 1], got {batch.dtype}")
    model.check_input(batch)
    return batch


def check_ranking(ranking: torch.Tensor | np.ndarray | Sequence[int], pairs: int, channels: int,
                  layer: str) -> torch.Tensor:
    """Rankings as an int64 (P, K) tensor of permutations of the layer's channels.

    Shape: ranking (K,) (shared by every pair) or (P, K) → (P, K).
    """
    order = torch.as_tensor(np.asarray(ranking))
    if order.ndim == 1:
        order = order[None].expand(pairs, -1)
    if order.ndim != 2 or order.shape[0] != pairs:
        raise ConfigError(f"ranking must have shape (K,) or (pairs={pairs}, K), got {tuple(order.shape)}")
    if order.is_floating_point() or order.dtype == torch.bool:
        raise ConfigError(f"ranking holds channel ids (integers), got {order.dtype}")
    order = order.to(torch.int64)
    if order.shape[1] != channels or not torch.equal(order.sort(dim=1).values,
                                                     torch.arange(channels).expand(pairs, -1)):
        raise ConfigError(f"a ranking must list every channel of layer {layer!r} (0 … {channels - 1}) once, best "
                          f"first; complete a partial order (e.g. the rest by channel id) before patching")
    return order


def check_ks(ks: Sequence[int] | np.ndarray | None, channels: int) -> np.ndarray:
    """``ks`` as ascending unique int64 in 0 … channels (default: every k). Shape: (n,)."""
    if ks is None:
        return np.arange(channels + 1, dtype=np.int64)
    values = np.asarray(ks)
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iu":
        raise ConfigError(f"ks must be a non-empty list of integers, got {values.tolist()!r}"[:200])
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() > channels or np.any(np.diff(values) <= 0):
        raise ConfigError(f"ks must ascend strictly within 0 … {channels} (the layer's channels), got "
                          f"{values.tolist()}"[:200])
    return values


def default_ks(channels: int, dense: int = DENSE_KS, points: int = 16) -> np.ndarray:
    """A grid of ks for a layer of ``channels``: every k in 0 … ``dense``, then ``points`` more spaced
    geometrically up to ``channels`` (all of them when ``channels`` ≤ ``dense`` + ``points``).

    The area of a curve on this grid estimates the area on every k (:func:`~advlens.faithfulness.auc.grid_area`)
    at a fraction of the forward passes: 37 instead of 257 for 256 channels.

    Shape: (n,) int64, ascending, from 0 to ``channels``.
    """
    if not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ConfigError(f"channels must be a positive integer, got {channels!r}")
    if channels <= dense + points:
        return np.arange(channels + 1, dtype=np.int64)
    tail = np.geomspace(dense, channels, points + 1)[1:]
    return np.unique(np.concatenate([np.arange(dense + 1), np.round(tail)])).astype(np.int64)


def _unpatched(model: AnalysedModel, images: torch.Tensor, layer: str,
               batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax and ``layer``'s output of unpatched passes. Shape: (N, classes) on the CPU, (N, K, ...) on device."""
    probs, maps = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(model.device, model.mean.dtype)
        with model.tapping([layer]) as out:
            logits = model(batch)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        maps.append(out[layer].detach())
    return torch.cat(probs), torch.cat(maps)


def patch_curve(model: AnalysedModel, benign: torch.Tensor | np.ndarray, adversarial: torch.Tensor | np.ndarray,
                layer: str, ranking: torch.Tensor | np.ndarray | Sequence[int], mode: str = "insertion",
                ks: Sequence[int] | np.ndarray | None = None, *, batch_size: int = DEFAULT_BATCH) -> PatchCurve:
    """The class probabilities of the pairs as the top-k channels of ``layer`` are patched, for each k.

    Args:
        model: the analysed model (eval mode; no gradients are computed).
        benign, adversarial: the pairs' images, pixels in [0, 1].
        layer: a layer of ``model.graph`` with channels (spatial maps or a vector).
        ranking: a channel order, best first — every channel once; one for all pairs or one per pair.
        mode: ``"insertion"`` (adversarial maps into the benign pass) or ``"restoration"`` (benign maps
            into the adversarial pass).
        ks: numbers of patched channels, strictly ascending in 0 … channels (default: every k).
        batch_size: (pair, k) items per forward pass.

    Shape:
        benign, adversarial: (P, C, H, W) or (C, H, W); ranking: (K,) or (P, K); result: see :class:`PatchCurve`.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    benign, adversarial = _as_batch(benign, "benign", model), _as_batch(adversarial, "adversarial", model)
    if benign.shape != adversarial.shape:
        raise ConfigError(f"benign {tuple(benign.shape)} and adversarial {tuple(adversarial.shape)} images differ "
                          "in shape: give one adversarial image per benign image")
    name = model.graph.resolve(layer)
    shape = model.graph[name].shape
    if len(shape) not in (1, 3):
        raise ModelError(f"layer {layer!r} has output shape {tuple(shape)}: patch curves need channels "
                         "(C, H, W maps or a C vector)")
    channels, pairs = int(shape[0]), len(benign)
    order = check_ranking(ranking, pairs, channels, name)
    steps = check_ks(ks, channels)
    with torch.no_grad():
        both_probs, both_maps = _unpatched(model, torch.cat([benign, adversarial]), name, batch_size)
        benign_probs, adversarial_probs = both_probs[:pairs], both_probs[pairs:]
        start_images = benign if mode == "insertion" else adversarial
        donor = both_maps[pairs:] if mode == "insertion" else both_maps[:pairs]
        position = torch.empty_like(order)
        position.scatter_(1, order, torch.arange(channels).expand(pairs, -1))  # position[p, c]: rank of c
        position = position.to(model.device)
        k_values = torch.as_tensor(steps, device=model.device)
        items = pairs * len(steps)
        probs = torch.empty(items, len(benign_probs[0]), dtype=torch.float32)
        for start in range(0, items, batch_size):
            index = torch.arange(start, min(start + batch_size, items), device=model.device)
            pair, step = index // len(steps), index % len(steps)
            mask = position[pair] < k_values[step][:, None]  # (B, K)
            other = donor[pair]
            mask = mask.view(*mask.shape, *([1] * (other.ndim - 2)))

            def patch(value: torch.Tensor, _mask=mask, _other=other) -> torch.Tensor:
                return torch.where(_mask, _other.to(value.dtype), value)

            with model.patching(name, patch):
                logits = model(start_images[pair.cpu()].to(model.device, model.mean.dtype))
            probs[start:start + len(index)] = torch.softmax(logits.float(), dim=1).cpu()
    return PatchCurve(layer=name, mode=mode, channels=channels, ks=steps,
                      probs=probs.view(pairs, len(steps), -1), benign_probs=benign_probs,
                      adversarial_probs=adversarial_probs)
