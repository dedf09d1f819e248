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
in channels-last memory layout on the CPU: the same function, about 1.5× cheaper in CPU time. In float32 the results
equal those of :class:`advlens.attacks.PGD` (``random_start=False``) and :class:`advlens.attacks.FGSM` run
strength by strength, up to floating-point rounding (which can flip the sign of a gradient that is almost zero).

Precision: by default (``precision="auto"``) PGD's gradient passes run in bfloat16 where the hardware computes
it natively (AVX512-BF16 or AMX CPUs, CUDA GPUs with bfloat16), float32 elsewhere (:func:`resolve_precision`);
``precision="float32"`` switches it off. A bfloat16 pass costs about half the CPU time of a float32 one (1.9 vs
3.8 ms per image on the demo model, one thread of an AMD EPYC with AVX512-BF16). L∞ PGD uses only the gradient's
sign, which bfloat16 keeps for ~97.5 % of the pixels; each step still moves α along a sign vector and is
projected onto the ε-ball and [0, 1], so every result is a valid PGD-κ perturbation of budget ε. The final
forward pass (prediction, probabilities, maxima) is always float32 on the model itself. Measured on 300 seeded
true positives of the demo model × 6 strengths (``benchmarks/sweep_precision.py``): PGD with bfloat16
gradients costs 1.78× less CPU time, and its final predictions equal those of the plain float32
:class:`advlens.attacks.PGD` for 99.1 % of the (image, strength) rows (16 of 1,800 differ: 0 / 1 / 2 / 2 / 6 / 5 of
300 at ε = 1 … 32/255, mostly another wrong class; success differs for 5); the float32 sweep equals it
on all 1,800. FGSM's one gradient stays float32 (:func:`attack_precision`): bfloat16 saved it only 1.11× (its
six forward passes dominate) and changed 2.1 % of its predictions (6.3 % at ε = 32/255).
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
GRADIENT_PRECISIONS = ("auto", "bfloat16", "float32")
"""The number formats the attack's gradient passes can run in (:func:`gradient_model`)."""
DEFAULT_GRADIENT_PRECISION = "auto"
"""bfloat16 where the hardware computes it natively (:func:`native_bfloat16`), float32 elsewhere."""


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


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively (a CUDA GPU that supports bfloat16, or a CPU
    with AVX512-BF16 or AMX instructions), so that bfloat16 gradient passes are cheaper than float32 ones."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:  # private helpers of torch.cpu (no public API says this); absent → assume no native bfloat16
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"bfloat16"`` or ``"float32"``: ``precision`` itself, or for ``"auto"`` bfloat16 exactly where
    :func:`native_bfloat16` holds. Raises :class:`AttackError` for another name."""
    if precision not in GRADIENT_PRECISIONS:
        raise AttackError(f"the sweep's gradient precision must be one of {', '.join(GRADIENT_PRECISIONS)}, "
                          f"got {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


class _PixelModel(nn.Module):
    """Pixels in [0, 1] → float32 logits through a (fused) copy of the network: ``net((x − mean) / std)``, the
    network's input cast to ``dtype`` (the network's own number format)."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.net, self.mean, self.std, self.dtype = net, mean, std, dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(((images - self.mean) / self.std).to(self.dtype)).float()


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


def attack_precision(attack: str, precision: str) -> str:
    """The number format of ``attack``'s gradient passes in a sweep run at ``precision``: PGD's follows it, FGSM's
    one gradient is always float32 (bfloat16 would save it ~10 % of its CPU time, where the six forward passes
    dominate, and change ~2 % of its final predictions)."""
    return precision if attack == "pgd" else "float32"


def gradient_models(model: AnalysedModel, attacks: Sequence[str], precision: str) -> dict[str, nn.Module]:
    """:func:`gradient_model` of ``model`` for each attack (:func:`attack_precision`), one copy per format."""
    formats = {attack: resolve_precision(attack_precision(attack, precision), model.device) for attack in attacks}
    built = {name: gradient_model(model, name) for name in set(formats.values())}
    return {attack: built[name] for attack, name in formats.items()}


def gradient_model(model: AnalysedModel, precision: str = "float32") -> nn.Module:
    """A copy of ``model`` for input gradients: pixels → float32 logits, batch norms folded into the
    convolutions before them (:func:`fold_batch_norms`) and, on the CPU, channels-last weights (on an H100 the
    first pass at each new batch shape took 5.2–8.8 s with channels-last weights against 0.11–0.23 s contiguous,
    about 33 of the 40 s of EfficientNet-Lite0's sweep, for 0–18% faster later passes:
    ``benchmarks/sweep_gradients.py --device cuda``). In float32 it is the same
    function as ``model`` up to rounding, and cheaper (no batch-norm passes; no layout conversion around each
    convolution). With ``precision="bfloat16"`` (or ``"auto"`` on hardware with native bfloat16, see
    :func:`resolve_precision`) weights and activations are bfloat16 (8 significant bits): about half the CPU
    time again, and a gradient whose sign differs from the float32 one in a few percent of the pixels (see
    the module's note on precision). A network that ``torch.fx`` cannot trace is copied unfolded (logged).
    Parameters do not require gradients; ``model`` is left alone.
    """
    dtype = torch.bfloat16 if resolve_precision(precision, model.device) == "bfloat16" else torch.float32
    try:
        net = fold_batch_norms(model.net)
    except Exception as exc:  # torch.fx raises many types on code it cannot trace; the copy below still works
        logger.info("the sweep's gradients use the network without folded batch norms (torch.fx cannot trace it: "
                    "%s)", exc)
        net = copy.deepcopy(model.net)
    layout = torch.channels_last if model.device.type == "cpu" else torch.contiguous_format
    net = net.eval().to(dtype=dtype, memory_format=layout)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return _PixelModel(net, model.mean, model.std, dtype).eval()


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
                     gradients: nn.Module | None = None, precision: str = DEFAULT_GRADIENT_PRECISION,
                     ) -> dict[str, np.ndarray]:
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
            ``model`` in ``precision``, built per call: pass one built once when calling for many chunks).
        precision: the sweep's number format (:func:`resolve_precision`); PGD's gradient passes use it when
            ``gradients`` is None, FGSM's are float32 (:func:`attack_precision`).

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
    if gradients is None:
        gradients = gradient_model(model, attack_precision(attack, precision))
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
          progress: Callable[[int], None] | None = None, precision: str = DEFAULT_GRADIENT_PRECISION,
          ) -> dict[str, np.ndarray]:
    """Every attack at every strength on ``images`` (:func:`attack_strengths`, ``chunk`` images at a time).

    ``progress(n)`` is called after each chunk with the number of (image, strength) rows it finished;
    ``precision`` is the number format of PGD's gradient passes (:func:`attack_precision`).

    Returns:
        the stage's layout (A attacks, E strengths, N images): ``adv_pred`` (A, E, N) int64,
        ``adv_prob_true`` (A, E, N) float32 (and ``adv_prob_target`` when targeted),
        ``adv_max_L{i:02d}`` (A, E, N, C_i) float32, ``adv_delta`` (A, E, N, c, H, W) float16.
    """
    check_sweep(eps, attacks, steps, alpha_ratio)
    if chunk < 1:
        raise AttackError(f"chunk must be at least 1 image, got {chunk}")
    parts: dict[str, list[list[np.ndarray]]] = {}
    gradients = gradient_models(model, attacks, precision)
    for attack in attacks:
        found: dict[str, list[np.ndarray]] = {}
        for start in range(0, len(images), chunk):
            part = slice(start, start + chunk)
            result = attack_strengths(model, images[part], labels[part], layers, eps, attack, steps, alpha_ratio,
                                      None if targets is None else targets[part], gradients[attack])
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
