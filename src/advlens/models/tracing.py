"""Build a network's layer list: torch.fx tracing, or (fallback) the order module hooks fire.

Naming scheme of capture points (stable: it depends only on the module tree and the forward code):

* a module's output is its dotted module name (``layer1.conv1``); the k-th extra call of a reused
  module gets ``:k`` (``_swish:1`` is the second call of ``_swish``);
* a tensor that is the output of a container module (a block, a ``Sequential``) is named after the
  innermost such module that computes it (``stem`` rather than ``stem.2``, ``layer1`` for the
  block's final ReLU); the other module names of that tensor stay valid aliases;
* a functional op (``torch.relu``, ``+``, ``x.view``) is named ``<enclosing module>.<op>`` with
  ``_1``, ``_2`` … for later calls in that module (``layer1.relu``, ``layer1.relu_1``), as torch.fx
  names nodes, but counted per module;
* the image the network reads is ``input``.

Names use letters, digits, ``_``, ``.`` and ``:`` only.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from advlens.models import receptive_field as rf
from advlens.models.layer_node import (
    ACTIVATION_FUNCTIONS,
    ACTIVATION_MODULES,
    MERGE_OPS,
    WEIGHTED_FUNCTIONS,
    LayerNode,
    is_activation_module,
    module_kind,
)

logger = logging.getLogger(__name__)

# subclasses of these stay one layer (EfficientNet's Conv2dStaticSamePadding is an nn.Conv2d with a pad child)
LEAF_TYPES = (
    nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.dropout._DropoutNd, nn.Flatten, nn.Identity, *ACTIVATION_MODULES,
)
INPUT_NAME = "input"
MAX_OPAQUE = 32
_INPLACE_OPERATORS = frozenset({operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                                operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
                                operator.ilshift, operator.irshift, operator.imatmul})
_ALIASING_OPS = frozenset({"view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze",
                           "transpose", "permute", "expand", "expand_as", "narrow", "t", "contiguous", "split",
                           "chunk", "unbind", "getitem", "__getitem__", "detach", "as_strided", "movedim",
                           "select", "dropout", "dropout2d", "identity"})
_ALIASING_MODULES = (nn.Identity, nn.modules.dropout._DropoutNd, nn.Flatten, nn.Unflatten)


class TraceFailure(Exception):
    """torch.fx could not trace the model's own ``forward``."""


@dataclass
class BuiltGraph:
    """What a builder hands to :class:`~advlens.models.graph.ModelGraph`."""

    nodes: list[LayerNode]
    output: str | None
    calls: dict[str, str]            # module call → module class name
    residual_calls: set[str]          # module calls that contain a merge of two branches
    graph_module: fx.GraphModule | None
    opaque: tuple[str, ...] = ()


def op_name(target) -> str:
    """``relu`` for torch.relu / F.relu, ``add`` for operator.add, the method name for methods."""
    if isinstance(target, str):
        return target
    return getattr(target, "__name__", type(target).__name__).lstrip("_") or "op"


def _call_name(qualname: str, index: int) -> str:
    return qualname if index == 0 else f"{qualname}:{index}"


class _Tracer(fx.Tracer):
    """Keeps standard layers whole, records module calls, their outputs and each node's scope."""

    def __init__(self, opaque: set[str]) -> None:
        super().__init__()
        self.opaque = opaque
        self.scopes: list[str] = []
        self.counts: dict[str, int] = {}
        self.outputs: list[tuple[str, fx.Node]] = []
        self.call_types: dict[str, str] = {}
        self.failed: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.opaque or isinstance(m, LEAF_TYPES)
                or super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m, forward, args, kwargs):
        qualname = self.path_of_module(m)
        index = self.counts.get(qualname, 0)
        self.counts[qualname] = index + 1
        call = _call_name(qualname, index)
        self.call_types[call] = type(m).__name__
        self.scopes.append(call)
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed is None:
                self.failed = qualname
            raise
        finally:
            self.scopes.pop()
        if isinstance(out, fx.Proxy):
            self.outputs.append((call, out.node))
        return out

    def create_node(self, *args, **kwargs) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta["advlens_scopes"] = tuple(self.scopes)
        return node


def _trace(net: nn.Module) -> tuple[_Tracer, fx.Graph]:
    """Trace with torch.fx; a submodule that cannot be traced becomes one opaque layer."""
    opaque: set[str] = set()
    for _ in range(MAX_OPAQUE):
        tracer = _Tracer(opaque)
        try:
            return tracer, tracer.trace(net)
        except Exception as exc:  # noqa: BLE001 - any tracing error: make the failing module opaque
            if not tracer.failed or tracer.failed in opaque:
                raise TraceFailure(f"{type(exc).__name__}: {exc}") from exc
            logger.info("torch.fx cannot trace inside %r (%s: %s); it is kept as one opaque layer",
                        tracer.failed, type(exc).__name__, exc)
            opaque.add(tracer.failed)
    raise TraceFailure(f"more than {MAX_OPAQUE} modules cannot be traced")


def _is_inplace(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (node.target in _INPLACE_OPERATORS or node.kwargs.get("inplace") is True
                or (name.endswith("_") and not name.startswith("_")))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    return False


def _is_aliasing(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), _ALIASING_MODULES)
    return node.op in ("call_function", "call_method") and op_name(node.target) in _ALIASING_OPS


def _changed_in_place_later(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether a later in-place op writes into this node's output (directly or through a view)."""
    todo, seen = [node], set()
    while todo:
        current = todo.pop()
        seen.add(current)
        for user in current.users:
            if user in seen or not user.args or user.args[0] is not current:
                continue
            if _is_inplace(user, gm):
                return True
            if _is_aliasing(user, gm):
                todo.append(user)
    return False


def _unique(candidate: str, taken: set[str]) -> str:
    """``candidate``, or ``candidate_1``, ``candidate_2`` … when a module or layer already has that name."""
    if candidate not in taken:
        return candidate
    index = 1
    while f"{candidate}_{index}" in taken:
        index += 1
    return f"{candidate}_{index}"


def _per_image(meta) -> tuple[int, ...] | None:
    if isinstance(meta, TensorMetadata):
        return tuple(int(s) for s in meta.shape[1:])
    return None


def _hw(shape: tuple[int, ...] | None) -> tuple[int, int] | None:
    return (shape[1], shape[2]) if shape is not None and len(shape) == 3 else None


def _name_layers(fx_nodes: list[fx.Node], tensor: set[fx.Node], outputs_of: dict[fx.Node, list[str]],
                 taken: set[str]) -> dict[fx.Node, str]:
    """Layer names by the scheme in the module docstring."""
    names: dict[fx.Node, str] = {}
    counters: dict[tuple[str, str], int] = {}
    for node in fx_nodes:
        if node not in tensor:
            continue
        scopes = node.meta.get("advlens_scopes", ())
        containing = [c for c in outputs_of.get(node, []) if c in scopes]
        if node.op == "placeholder":
            names[node] = INPUT_NAME if not names else _unique(f"input_{node.name}", taken)
        elif node.op == "call_module":
            bigger = [c for c in containing if c != scopes[-1]]  # a container returning this leaf's output
            names[node] = bigger[0] if bigger else scopes[-1]
        elif containing:
            names[node] = containing[0]
        else:
            scope = scopes[-1] if scopes else ""
            op = op_name(node.target)
            base = f"{scope}.{op}" if scope else op
            count = counters.get((scope, op), 0)
            while (base if count == 0 else f"{base}_{count}") in taken:  # a module of that name exists
                count += 1
            names[node] = base if count == 0 else f"{base}_{count}"
            counters[(scope, op)] = count + 1
        taken.add(names[node])
    return names


METADATA_READS = frozenset({"size", "dim", "ndimension", "numel", "shape", "ndim", "dtype", "device"})
"""Reads of a tensor's metadata: ``x.view(x.size(0), -1)`` does not take ``x``'s values from there."""


def _is_metadata_read(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in METADATA_READS
    return (node.op == "call_function" and node.target is getattr and len(node.args) > 1
            and node.args[1] in METADATA_READS)


def _tensor_inputs(node: fx.Node, tensor: set[fx.Node], seen: set[fx.Node] | None = None) -> list[fx.Node]:
    """The tensor layers whose values a node reads, looking through non-tensor nodes (tuples, lists);
    metadata reads (``x.size(0)``, ``x.shape``) are not data inputs, so they draw no edge."""
    found: list[fx.Node] = []
    seen = seen if seen is not None else set()
    for parent in node.all_input_nodes:
        if parent in seen:
            continue
        seen.add(parent)
        if parent in tensor:
            found.append(parent)
        elif parent.op != "get_attr" and not _is_metadata_read(parent):
            found.extend(_tensor_inputs(parent, tensor, seen))
    return found


def _is_parameter(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op != "get_attr":
        return False
    try:
        gm.get_parameter(node.target)
        return True
    except AttributeError:
        return False


def _facts(node: fx.Node, gm: fx.GraphModule, tracer: _Tracer, in_hw, out_hw,
           activation_scopes: set[str]) -> tuple[str, str, str, bool, rf.Step]:
    """(op, kind, block, activation, receptive-field step) of one traced node."""
    scopes = node.meta.get("advlens_scopes", ())
    if node.op == "placeholder":
        return "input", "other", "", False, rf.SAME
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        step = (rf.opaque_step(module, in_hw, out_hw) if node.target in tracer.opaque
                else rf.module_step(module, in_hw, out_hw))
        return (type(module).__name__, module_kind(module), scopes[-2] if len(scopes) > 1 else "",
                is_activation_module(module), step)
    op = op_name(node.target)
    with_params = any(_is_parameter(p, gm) for p in node.all_input_nodes)
    kind = "weighted" if op in WEIGHTED_FUNCTIONS else "parametric" if with_params else "other"
    # a functional activation inside a custom activation module (x * sigmoid(x)) is not the output
    activation = op in ACTIVATION_FUNCTIONS and not any(s in activation_scopes for s in scopes)
    if node.op == "call_function":
        weight = node.args[1] if len(node.args) > 1 and isinstance(node.args[1], fx.Node) else None
        meta = weight.meta.get("tensor_meta") if weight is not None else None
        weight_shape = meta.shape if isinstance(meta, TensorMetadata) else None
        step = rf.function_step(op, node.args, dict(node.kwargs), in_hw, out_hw, weight_shape)
    else:
        step = rf.from_shapes(in_hw, out_hw)
    return op, kind, scopes[-1] if scopes else "", activation, step


def build_fx(net: nn.Module, probe: torch.Tensor) -> BuiltGraph:
    """Trace ``net`` with torch.fx and describe every tensor it computes on ``probe``.

    Raises TraceFailure when the model's own ``forward`` cannot be traced; errors of the traced
    copy on the probe propagate.

    Shape:
        probe: (N, C, H, W), normalized input.
    """
    tracer, graph = _trace(net)
    gm = fx.GraphModule(net, graph)
    with torch.no_grad():
        ShapeProp(gm).propagate(probe)
    fx_nodes = list(gm.graph.nodes)
    shapes = {n: _per_image(n.meta.get("tensor_meta")) for n in fx_nodes if n.op not in ("get_attr", "output")}
    tensor = {n for n, shape in shapes.items() if shape is not None}
    outputs_of: dict[fx.Node, list[str]] = {}  # module calls returning each node, innermost first
    for call, node in tracer.outputs:
        outputs_of.setdefault(node, []).append(call)
    taken = {name for name, _ in net.named_modules()} | {c for c, _ in tracer.outputs} | {INPUT_NAME}
    names = _name_layers(fx_nodes, tensor, outputs_of, taken)
    activation_scopes = _custom_activation_calls(net, tracer)
    residual_calls: set[str] = set()
    nodes: list[LayerNode] = []
    for node in fx_nodes:
        if node not in tensor:
            continue
        parents = _tensor_inputs(node, tensor)
        scopes = node.meta.get("advlens_scopes", ())
        op, kind, block, activation, step = _facts(
            node, gm, tracer, _hw(shapes[parents[0]]) if parents else None, _hw(shapes[node]), activation_scopes)
        if op in MERGE_OPS and len(parents) >= 2 and scopes and len({shapes[p] for p in parents}) == 1:
            residual_calls.add(scopes[-1])  # two equal-shape branches join: a residual (or dense) block
        calls = outputs_of.get(node, [])
        module_outputs = tuple(c for c in calls if c in scopes)
        hook = None
        if calls:
            qualname, _, index = calls[0].partition(":")
            hook = (qualname, int(index or 0))
        nodes.append(LayerNode(
            name=names[node], op=op, kind=kind, block=block,
            inputs=tuple(dict.fromkeys(names[p] for p in parents)), shape=shapes[node],
            aliases=tuple(c for c in calls if c != names[node]), module_outputs=module_outputs,
            activation=activation or any(c in activation_scopes for c in module_outputs), hook=hook, step=step,
            protect=_changed_in_place_later(node, gm), fx_name=node.name,
        ))
    returned = next(n for n in fx_nodes if n.op == "output").args[0]
    output = names.get(returned) if isinstance(returned, fx.Node) else None
    return BuiltGraph(nodes, output, dict(tracer.call_types), residual_calls, gm, tuple(sorted(tracer.opaque)))


def _custom_activation_calls(net: nn.Module, tracer: _Tracer) -> set[str]:
    """Calls of traced-through modules that are activations by class name (EfficientNet's ``Swish``)."""
    found = set()
    for call in tracer.call_types:
        qualname = call.partition(":")[0]
        module = net.get_submodule(qualname)
        if qualname not in tracer.opaque and not isinstance(module, LEAF_TYPES) and is_activation_module(module):
            found.add(call)
    return found


# ------------------------------------------------------------------------------------------ hook fallback


@dataclass
class _Call:
    call: str
    qualname: str
    module: nn.Module
    scopes: tuple[str, ...]  # module calls open when this one started, outermost first
    output: torch.Tensor
    args: tuple
    started: int  # number of calls finished before this one started


def _is_leaf(module: nn.Module) -> bool:
    return isinstance(module, LEAF_TYPES) or not any(True for _ in module.children())


def _record_calls(net: nn.Module, probe: torch.Tensor) -> tuple[list[_Call], object]:
    records: list[_Call] = []
    stack: list[tuple[str, int]] = []
    counts: dict[str, int] = {}
    handles = []

    def pre_hook(_module, _args, qualname):
        index = counts.get(qualname, 0)
        counts[qualname] = index + 1
        stack.append((_call_name(qualname, index), len(records)))

    def hook(module, args, output, qualname):
        call, started = stack.pop()
        if isinstance(output, torch.Tensor):
            records.append(_Call(call, qualname, module, tuple(c for c, _ in stack), output,
                                 tuple(a for a in args if isinstance(a, torch.Tensor)), started))

    try:
        for qualname, module in net.named_modules():
            if qualname:
                handles.append(module.register_forward_pre_hook(lambda m, a, _q=qualname: pre_hook(m, a, _q)))
                handles.append(module.register_forward_hook(lambda m, a, o, _q=qualname: hook(m, a, o, _q)))
        with torch.no_grad():
            result = net(probe)
    finally:
        for handle in handles:
            handle.remove()
    return records, result


def build_hooks(net: nn.Module, probe: torch.Tensor) -> BuiltGraph:
    """Describe ``net`` from the order its module hooks fire (functional ops stay invisible).

    A layer's inputs are the earlier layers whose output tensors it reads; where a functional op
    sits in between, the previous layer is assumed, so the graph is approximate there.

    Shape:
        probe: (N, C, H, W), normalized input.
    """
    records, result = _record_calls(net, probe)
    by_tensor: dict[int, int] = {id(probe): 0}
    groups: list[list[_Call]] = [[]]
    parents_of: list[list[int]] = [[]]
    for position, record in enumerate(records):
        key = id(record.output)
        inplace = _is_leaf(record.module) and bool(getattr(record.module, "inplace", False))
        if key in by_tensor and not inplace:
            groups[by_tensor[key]].append(record)  # a container returning its child's tensor, an identity
            continue
        parents = [by_tensor[id(a)] for a in record.args if id(a) in by_tensor]
        made_inside = len(groups) > 1 and groups[-1][0] in records[record.started:position]
        if not _is_leaf(record.module) and made_inside:
            parents = [len(groups) - 1] + parents  # its last inner layer (and a shortcut from its input)
        elif not parents:
            parents = [len(groups) - 1]
        by_tensor[key] = len(groups)
        groups.append([record])
        parents_of.append(list(dict.fromkeys(parents)))

    nodes = [LayerNode(INPUT_NAME, "input", "other", "", (), tuple(int(s) for s in probe.shape[1:]))]
    for index, group in enumerate(groups[1:], start=1):
        first = group[0]
        containing = [r.call for r in group[1:] if r.call in first.scopes and not _is_leaf(r.module)]
        name = containing[0] if _is_leaf(first.module) and containing else first.call
        shape = tuple(int(s) for s in first.output.shape[1:])
        parents = parents_of[index]
        leaf = _is_leaf(first.module)
        step = rf.module_step(first.module, _hw(nodes[parents[0]].shape), _hw(shape)) if leaf else rf.SAME
        nodes.append(LayerNode(
            name=name, op=type(first.module).__name__, kind=module_kind(first.module) if leaf else "other",
            block=name if name != first.call else (first.scopes[-1] if first.scopes else ""),
            inputs=tuple(dict.fromkeys(nodes[p].name for p in parents)), shape=shape,
            aliases=tuple(r.call for r in group if r.call != name),
            module_outputs=(first.call, *containing), activation=any(is_activation_module(r.module) for r in group),
            hook=(first.qualname, int(first.call.partition(":")[2] or 0)), step=step, protect=True,
        ))
    output = None
    if isinstance(result, torch.Tensor) and id(result) in by_tensor:
        output = nodes[by_tensor[id(result)]].name
    return BuiltGraph(nodes, output, {r.call: type(r.module).__name__ for r in records}, set(), None)
