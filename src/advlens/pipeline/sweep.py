"""The strength sweep of the pathways system (spec-004 §1–§2, paper 004 §3.2): attack a set of images at
several strengths and record, per image, attack and strength, what the pathway measures need.

For every strength ε the attacked image, its prediction, the softmax probability of the true class and
the per-channel spatial maximum of every pathway layer are recorded; the maxima come from the one
forward pass that also gives the prediction, so no extra forward is spent on them.

Speed: all strengths of a chunk of images run as one batch (the images repeated once per strength, each
row with its own ε and step size α = ε · ``alpha_ratio``). PGD starts at the benign image (no random
start), so its first gradient is the same for every strength and is computed once per image; FGSM's one
gradient likewise serves every strength. The gradients come from :func:`gradient_model`, a copy of the
network with each batch norm folded into the convolution before it (traced with ``torch.fx``, eval mode)
in channels-last memory layout: the same function, about 1.5× cheaper in CPU time. The results equal those of
:class:`advlens.attacks.PGD` (``random_start=False``) and :class:`advlens.attacks.FGSM` run strength by
strength, up to floating-point rounding (which can flip the sign of a gradient that is almost zero).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from advlens.attacks.base import input_gradient
from advlens.errors import AttackError
from advlens.models import AnalysedModel

logger = logging.getLogger(__name__)

SWEEP_ATTACKS = ("pgd", "fgsm")
"""The attacks a sweep can run: untargeted (or targeted) L∞ PGD and FGSM."""
DEFAULT_SWEEP_EPS = tuple(k / 255 for k in (1, 2, 4, 8, 16, 32))
DEFAULT_SWEEP_STEPS = 7
DEFAULT_ALPHA_RATIO = 0.25
"""PGD's step size as a fraction of ε (α = ε/4)."""
DEFAULT_PER_CLASS = 300


def check_sweep(eps: Sequence[float], attacks: Sequence[str], steps: int, alpha_ratio: float) -> None:
    """Raise :class:`AttackError` unless the sweep's parameters make sense (before any work starts)."""
    problems = []
    if not len(eps) or not all(isinstance(e, (int, float)) and math.isfinite(e) and 0 < e <= 1 for e in eps):
        problems.append(f"the strengths ε must be numbers in (0, 1], got {list(eps)}")
    elif len(set(eps)) != len(eps):
        problems.append(f"the strengths ε are repeated: {list(eps)}")
    unknown = [a for a in attacks if a not in SWEEP_ATTACKS]
    if not len(attacks) or unknown:
        problems.append(f"the sweep's attacks must be among {', '.join(SWEEP_ATTACKS)}, got {list(attacks)}")
    elif len(set(attacks)) != len(attacks):
        problems.append(f"the sweep's attacks are repeated: {list(attacks)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        problems.append(f"PGD needs at least 1 step, got {steps}")
    if not (math.isfinite(alpha_ratio) and alpha_ratio > 0):
        problems.append(f"the step-size ratio α/ε must be positive, got {alpha_ratio}")
    if problems:
        raise AttackError("; ".join(problems))


class _PixelModel(nn.Module):
    """Pixels in [0, 1] → logits through a (fused) copy of the network: ``net((x − mean) / std)``."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, mean, std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """A traced copy of ``net`` (eval mode) in which every batch norm that directly follows a convolution used
    once is folded into it (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`): the same function up to
    rounding, without the batch-norm passes. ``net`` is left alone.

    Raises whatever :func:`torch.fx.symbolic_trace` raises on code it cannot trace.
    """
    traced = fx.symbolic_trace(copy.deepcopy(net).eval())
    modules = dict(traced.named_modules())
    calls = Counter(node.target for node in traced.graph.nodes if node.op == "call_module")
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(modules[source.target], nn.Conv2d) and calls[source.target] == 1
                and calls[node.target] == 1 and modules[node.target].track_running_stats):
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(traced.get_submodule(parent), name, fuse_conv_bn_eval(modules[source.target], modules[node.target]))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


def gradient_model(model: AnalysedModel) -> nn.Module:
    """A copy of ``model`` for input gradients: pixels → logits, batch norms folded into the convolutions
    before them (:func:`fold_batch_norms`) and channels-last weights. The same function as ``model`` up to
    rounding, and cheaper (no batch-norm passes; no layout conversion around each convolution). A network
    that ``torch.fx`` cannot trace is copied unfolded (logged). Parameters do not require gradients;
    ``model`` is left alone.
    """
    try:
        net = fold_batch_norms(model.net)
    except Exception as exc:  # torch.fx raises many types on code it cannot trace; the copy below still works
        logger.info("the sweep's gradients use the network without folded batch norms (torch.fx cannot trace it: "
                    "%s)", exc)
        net = copy.deepcopy(model.net)
    net = net.eval().to(memory_format=torch.channels_last)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return _PixelModel(net, model.mean, model.std).eval()


def layer_maxima(model: AnalysedModel, images: torch.Tensor, layers: Sequence[str],
                 ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward pass without gradients: each layer's per-channel spatial maximum and the softmax output.

    Shape:
        images: (N, c, H, W) in [0, 1] on the model's device. Returns [(N, C_i)] float32 and the class
        probabilities (N, K) float32, on the CPU.
    """
    with torch.inference_mode(), model.tapping(list(layers)) as outputs:
        logits = model(images)
        maxima = [outputs[layer].flatten(2).amax(dim=2).float().cpu() for layer in layers]
    return maxima, torch.softmax(logits.float(), dim=1).cpu()


def benign_maxima(model: AnalysedModel, images: torch.Tensor, layers: Sequence[str],
                  batch_size: int = 128) -> list[np.ndarray]:
    """The per-channel spatial maximum of every layer on benign images (``model.capture(reduce="max")``).

    Shape:
        images: (N, c, H, W) in [0, 1]; returns [(N, C_i)] float32, one per layer.
    """
    if not len(images):
        return [np.zeros((0, model.graph[layer].channels), np.float32) for layer in layers]
    with torch.inference_mode():
        captured = model.capture(images, list(layers), reduce="max", batch_size=batch_size)
    return [captured[layer].float().numpy() for layer in layers]


def _per_row(values: Sequence[float], count: int, like: torch.Tensor) -> torch.Tensor:
    """``values`` repeated ``count`` times each, strength-major, as a (len·count, 1, 1, 1) tensor."""
    return torch.tensor(list(values), dtype=like.dtype, device=like.device).repeat_interleave(count).view(-1, 1, 1, 1)


def attack_strengths(model: AnalysedModel, images: torch.Tensor, labels: torch.Tensor, layers: Sequence[str],
                     eps: Sequence[float], attack: str = "pgd", steps: int = DEFAULT_SWEEP_STEPS,
                     alpha_ratio: float = DEFAULT_ALPHA_RATIO, targets: torch.Tensor | None = None,
                     gradients: nn.Module | None = None) -> dict[str, np.ndarray]:
    """Attack ``images`` at every strength of ``eps`` with one attack, all strengths in one batch.

    Args:
        model: classifier taking pixels in [0, 1].
        images, labels: benign images and their true labels.
        layers: the layers whose per-channel spatial maxima are recorded on the attacked images.
        eps: L∞ strengths ε.
        attack: ``"pgd"`` (``steps`` iterations of step α = ε · ``alpha_ratio``, no random start, like
            :class:`advlens.attacks.PGD`) or ``"fgsm"`` (like :class:`advlens.attacks.FGSM`).
        targets: for a targeted attack, the target class of each image (None: untargeted).
        gradients: the module whose input gradients drive the attack (default: :func:`gradient_model` of
            ``model``, built per call: pass one built once when calling for many chunks).

    Returns:
        ``pred`` (E, N) int64 predictions of the attacked images; ``prob_true`` (E, N) float32 softmax
        probability of the true label; ``prob_target`` (E, N) float32 of the target (targeted only);
        ``max_L{i:02d}`` (E, N, C_i) float32 spatial maxima of layer i; ``delta`` (E, N, c, H, W)
        float16 the perturbation x_adv − x.

    Shape:
        images: (N, c, H, W) in [0, 1]; labels, targets: (N,) int64.
    """
    check_sweep(eps, [attack], steps, alpha_ratio)
    model.check_input(images)
    device = model.device
    x0 = images.to(device, model.mean.dtype)
    count, strengths = len(x0), len(eps)
    if count == 0:
        raise AttackError("attack_strengths needs at least one image")
    labels = labels.to(device)
    aim = labels if targets is None else targets.to(device)
    targeted = targets is not None
    gradients = gradient_model(model) if gradients is None else gradients
    was_training = model.training
    model.eval()
    try:
        first = input_gradient(gradients, x0, aim, targeted).sign()  # the same start for every strength
        benign = x0.repeat(strengths, 1, 1, 1)
        radius = _per_row(eps, count, x0)
        if attack == "fgsm":
            adversarial = (benign + radius * first.repeat(strengths, 1, 1, 1)).clamp(0.0, 1.0)
        else:
            alpha = _per_row([e * alpha_ratio for e in eps], count, x0)
            aims = aim.repeat(strengths)
            adversarial = benign
            for step in range(steps):
                direction = first.repeat(strengths, 1, 1, 1) if step == 0 else \
                    input_gradient(gradients, adversarial, aims, targeted).sign()
                adversarial = (adversarial + alpha * direction).clamp(0.0, 1.0)
                adversarial = (benign + torch.minimum(torch.maximum(adversarial - benign, -radius), radius)
                               ).clamp(0.0, 1.0)
        maxima, probs = layer_maxima(model, adversarial, layers)
        rows = torch.arange(len(probs))
        result = {"pred": probs.argmax(dim=1).numpy().astype(np.int64).reshape(strengths, count),
                  "prob_true": probs[rows, labels.cpu().repeat(strengths)].numpy().reshape(strengths, count)}
        if targeted:
            result["prob_target"] = probs[rows, aim.cpu().repeat(strengths)].numpy().reshape(strengths, count)
        for i, values in enumerate(maxima):
            result[f"max_L{i:02d}"] = values.numpy().reshape(strengths, count, -1)
        result["delta"] = (adversarial - benign).half().cpu().numpy().reshape(strengths, count, *x0.shape[1:])
    finally:
        model.train(was_training)
    return result


def sweep(model: AnalysedModel, images: torch.Tensor, labels: torch.Tensor, layers: Sequence[str],
          eps: Sequence[float] = DEFAULT_SWEEP_EPS, attacks: Sequence[str] = SWEEP_ATTACKS,
          steps: int = DEFAULT_SWEEP_STEPS, alpha_ratio: float = DEFAULT_ALPHA_RATIO,
          targets: torch.Tensor | None = None, chunk: int = 32,
          progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Every attack at every strength on ``images`` (:func:`attack_strengths`, ``chunk`` images at a time).

    ``progress(n)`` is called after each chunk with the number of (image, strength) rows it finished.

    Returns:
        the stage's layout (A attacks, E strengths, N images): ``adv_pred`` (A, E, N) int64,
        ``adv_prob_true`` (A, E, N) float32 (and ``adv_prob_target`` when targeted),
        ``adv_max_L{i:02d}`` (A, E, N, C_i) float32, ``adv_delta`` (A, E, N, c, H, W) float16.
    """
    check_sweep(eps, attacks, steps, alpha_ratio)
    if chunk < 1:
        raise AttackError(f"chunk must be at least 1 image, got {chunk}")
    parts: dict[str, list[list[np.ndarray]]] = {}
    gradients = gradient_model(model)
    for attack in attacks:
        found: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(images), chunk):
            part = slice(start, start + chunk)
            result = attack_strengths(model, images[part], labels[part], layers, eps, attack, steps, alpha_ratio,
                                      None if targets is None else targets[part], gradients)
            for name, values in result.items():
                found.setdefault(name, []).append(values)
            if progress is not None:
                progress(len(eps) * len(images[part]))
        for name, values in found.items():
            parts.setdefault(name, []).append(values)
    return assemble(parts, model, images, layers, len(attacks), len(eps), targets is not None)


def assemble(parts: dict[str, list[list[np.ndarray]]], model: AnalysedModel, images: torch.Tensor,
             layers: Sequence[str], attacks: int, strengths: int, targeted: bool) -> dict[str, np.ndarray]:
    """Stack the per-chunk results of :func:`attack_strengths` (``parts[name][attack][chunk]``, each (E, n, …))
    into the stage's arrays (A, E, N, …); empty arrays of the right shape when there are no images."""
    shapes = {"pred": ((), np.int64), "prob_true": ((), np.float32), "delta": (tuple(images.shape[1:]), np.float16)}
    if targeted:
        shapes["prob_target"] = ((), np.float32)
    for i, layer in enumerate(layers):
        shapes[f"max_L{i:02d}"] = ((model.graph[layer].channels,), np.float32)
    arrays = {}
    for name, (tail, dtype) in shapes.items():
        if parts.get(name):
            stacked = np.stack([np.concatenate(chunks, axis=1) for chunks in parts[name]])
        else:
            stacked = np.zeros((attacks, strengths, 0, *tail), dtype)
        arrays[f"adv_{name}"] = stacked.astype(dtype, copy=False)
    return arrays
