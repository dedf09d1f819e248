"""One layer of a model graph, and how layers are classified (weighted, parametric, activation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from advlens.models.receptive_field import SAME, Step

WEIGHTED_MODULES = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)
WEIGHTED_FUNCTIONS = frozenset({"conv1d", "conv2d", "conv3d", "linear", "bilinear", "conv_transpose1d",
                                "conv_transpose2d", "conv_transpose3d"})
ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.LogSigmoid,
    nn.Threshold, nn.GLU,
)
ACTIVATION_FUNCTIONS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "prelu", "rrelu", "rrelu_", "elu", "elu_", "celu",
    "celu_", "selu", "selu_", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "hardtanh", "hardtanh_",
    "sigmoid", "sigmoid_", "tanh", "tanh_", "softplus", "softsign", "logsigmoid", "threshold", "threshold_", "glu",
})
# custom activation modules (EfficientNet's Swish, "HSwish", "MishAct" …) are recognised by their class name
ACTIVATION_WORDS = ("relu", "swish", "gelu", "silu", "mish", "sigmoid", "tanh", "activation")
# ops that join two branches of equal shape: their enclosing module is a residual (or dense) block
MERGE_OPS = frozenset({"add", "iadd", "add_", "__add__", "__iadd__", "cat", "concat", "concatenate"})


def is_activation_module(module: nn.Module) -> bool:
    """A standard activation, or a weight-free module whose class name names an activation."""
    if isinstance(module, ACTIVATION_MODULES):
        return True
    name = type(module).__name__.lower()
    if not (any(word in name for word in ACTIVATION_WORDS) or name.endswith("act")):
        return False
    return not any(isinstance(m, WEIGHTED_MODULES) for m in module.modules())


def module_kind(module: nn.Module) -> str:
    """``weighted`` (conv/linear), ``parametric`` (norm and other trainable) or ``other``."""
    if isinstance(module, WEIGHTED_MODULES) or any(isinstance(m, WEIGHTED_MODULES) for m in module.modules()):
        return "weighted"
    return "parametric" if any(True for _ in module.parameters()) else "other"


@dataclass(frozen=True)
class LayerNode:
    """A layer of the model graph: one tensor the forward pass computes.

    Attributes:
        name: stable, human-readable capture name (see :mod:`advlens.models.graph` for the scheme).
        op: the layer type: a module class (``Conv2d``) or a function/method name (``relu``, ``add``).
        kind: ``weighted`` (conv/linear), ``parametric`` (norm, other trainable) or ``other``.
        block: the module call enclosing this layer (``layer2``, ``_blocks.14``; ``""`` at top level).
        inputs: names of the layers whose outputs this layer reads.
        shape: output shape of one image, from the probe forward: (C, H, W) or (D,).
        aliases: other names of the same tensor (module outputs: ``stem.2`` for ``stem``).
        module_outputs: the module calls whose output this tensor is, innermost first.
        activation: whether the output is post-activation.
        hook: (module name, call index) whose forward hook sees this output; ``None`` for functional ops.

    Shape:
        shape: per image, without the batch dimension.
    """

    name: str
    op: str
    kind: str
    block: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    aliases: tuple[str, ...] = ()
    module_outputs: tuple[str, ...] = ()
    activation: bool = False
    hook: tuple[str, int] | None = None
    step: Step = field(default=SAME, repr=False, compare=False)
    protect: bool = field(default=False, repr=False, compare=False)  # an in-place op later changes it
    fx_name: str | None = field(default=None, repr=False, compare=False)

    @property
    def channels(self) -> int:
        """Channels of a (C, H, W) output, or the length of a (D,) output."""
        return int(self.shape[0]) if self.shape else 1

    @property
    def spatial(self) -> bool:
        """Whether the output is a stack of feature maps (C, H, W) with more than one position."""
        return len(self.shape) == 3 and self.shape[1] * self.shape[2] > 1

    def as_record(self) -> dict:
        """A JSON-friendly description (for stores and the Architecture View)."""
        return {"name": self.name, "op": self.op, "kind": self.kind, "block": self.block,
                "inputs": list(self.inputs), "shape": list(self.shape), "aliases": list(self.aliases),
                "activation": self.activation}
