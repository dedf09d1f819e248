"""Tap points: observe or replace any layer's output during a forward pass.

A :class:`Taps` registry holds, per layer, the functions that observe its output and those that
replace it. While any are registered, :meth:`Taps.run` runs the network so they fire:

* with forward hooks on the original network when every tapped layer is a module's output (the
  k-th call of a reused module included) — hooks are registered for that one call and removed in
  ``finally``, also when the forward raises;
* with the torch.fx copy otherwise (functional ops such as ``torch.relu`` inside a block's
  ``forward``): the copy calls a tap function after every layer, which does nothing for untapped
  layers. The copy shares the network's modules and parameters and computes the same ops, so the
  output is bit-identical; it was traced once, so Python-level switches changed later are not seen.

When a later in-place op (``nn.ReLU(inplace=True)``, ``x += y``) may write into an output an observer
keeps (``live``), the rest of the network gets a copy, so the kept tensor holds the layer's value and
stays on the autograd path: with hooks always (in-place ops in ``forward`` are invisible to them), in
the fx copy where the graph shows such an op.

Registrations belong to the thread that made them (a web server answers requests in threads): a
forward pass in another thread neither sees them nor disturbs the call counting of reused modules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from advlens.errors import ModelError
from advlens.models.graph import ModelGraph

Observer = Callable[[torch.Tensor], None]
Replacer = Callable[[torch.Tensor], torch.Tensor]
REDUCTIONS = ("none", "max", "mean", "abs_sum")


def reduce_output(value: torch.Tensor, reduce: str) -> torch.Tensor:
    """Reduce a layer output over its spatial dimensions.

    Shape:
        value: (N, C, *spatial) → (N, C) for ``max``/``mean``/``abs_sum``; unchanged for ``none``
        and for (N, D) outputs.
    """
    if reduce == "none" or value.ndim <= 2:
        return value
    dims = tuple(range(2, value.ndim))
    if reduce == "max":
        return value.amax(dim=dims)
    if reduce == "mean":
        return value.mean(dim=dims)
    if reduce == "abs_sum":  # Σ|x| without an |x| temporary
        return torch.linalg.vector_norm(value.flatten(2), ord=1, dim=-1)
    raise ModelError(f"unknown reduce {reduce!r}; use one of {', '.join(REDUCTIONS)}")


@dataclass
class _Entry:
    replacers: list[Replacer] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    live: list[Observer] = field(default_factory=list)  # observers that keep the tensor past the forward


class Taps:
    """Registered observers and replacements per layer, and the forward pass that fires them."""

    def __init__(self, net: nn.Module, graph: ModelGraph) -> None:
        self.net = net
        self.graph = graph
        self._local = threading.local()
        self._module: fx.GraphModule | None = None
        self._module_device: torch.device | None = None
        self._lock = threading.Lock()

    @property
    def _entries(self) -> dict[str, _Entry]:
        """This thread's registrations."""
        entries = getattr(self._local, "entries", None)
        if entries is None:
            entries = self._local.entries = {}
        return entries

    @property
    def active(self) -> bool:
        return bool(self._entries)

    @contextmanager
    def attached(self, observers: dict[str, list[Observer]] | None = None,
                 replacers: dict[str, list[Replacer]] | None = None, live: bool = True) -> Iterator[None]:
        """Register functions per layer name (aliases allowed) while the context is open.

        ``live=False`` promises that the observers copy or reduce the tensor before the forward
        pass goes on, so no protective copy is needed against later in-place ops.
        """
        added: list[tuple[str, list, object]] = []
        kinds = [("observers", observers or {}), ("replacers", replacers or {})]
        if live:
            kinds.append(("live", observers or {}))
        try:
            for kind, table in kinds:
                for name, functions in table.items():
                    layer = self.graph.resolve(name)
                    entry = self._entries.setdefault(layer, _Entry())
                    for function in functions:
                        getattr(entry, kind).append(function)
                        added.append((layer, getattr(entry, kind), function))
            yield
        finally:
            for layer, functions, function in reversed(added):
                for i in range(len(functions) - 1, -1, -1):
                    if functions[i] is function:
                        del functions[i]
                        break
                entry = self._entries.get(layer)
                if entry is not None and not entry.replacers and not entry.observers:
                    del self._entries[layer]

    # ------------------------------------------------------------------------------------- execution

    def _fire(self, layer: str, value: torch.Tensor, protect: bool) -> torch.Tensor:
        entry = self._entries.get(layer)
        if entry is None:
            return value
        for replace in entry.replacers:
            new = replace(value)
            if not isinstance(new, torch.Tensor) or new.shape != value.shape:
                got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise ModelError(f"the replacement for layer {layer!r} must be a tensor of shape "
                                 f"{tuple(value.shape)}, got {got}")
            value = new
        for observe in entry.observers:
            observe(value)
        return value.clone() if protect and entry.live else value

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output on ``x`` with every registered function firing.

        Shape:
            x: the network's (normalized) input.
        """
        source = self.graph.nodes[0]
        nodes = [self.graph[name] for name in self._entries if name != source.name]
        if all(node.hook is not None for node in nodes) or self.graph.graph_module is None:
            return self._run_hooks(self._fire(source.name, x, False), nodes)
        return self._fx_module(x.device)(x)

    def _run_hooks(self, x: torch.Tensor, nodes: list) -> torch.Tensor:
        wanted: dict[str, dict[int, object]] = {}
        for node in nodes:
            if node.hook is None:
                raise ModelError(f"layer {node.name!r} is a functional op, which the hook fallback cannot tap")
            qualname, call = node.hook
            wanted.setdefault(qualname, {})[call] = node
        counts = dict.fromkeys(wanted, 0)
        handles = []
        owner = threading.get_ident()

        def hook(_module, _args, output, _qualname):
            if threading.get_ident() != owner:  # another thread's forward pass
                return None
            call = counts[_qualname]
            counts[_qualname] = call + 1
            node = wanted[_qualname].get(call)
            if node is None or not isinstance(output, torch.Tensor):
                return None
            return self._fire(node.name, output, True)

        try:
            for qualname in wanted:
                module = self.net.get_submodule(qualname)
                handles.append(module.register_forward_hook(lambda m, a, o, _q=qualname: hook(m, a, o, _q)))
            return self.net(x)
        finally:
            for handle in handles:
                handle.remove()

    def _fx_module(self, device: torch.device) -> fx.GraphModule:
        with self._lock:
            if self._module is None:
                self._module = self._tapped_copy()
                self._module_device = None
            if self._module_device != device:
                self._module.to(device)  # buffers the copy holds itself; shared modules are already there
                self._module_device = device
            return self._module

    def _tapped_copy(self) -> fx.GraphModule:
        """A copy of the traced graph that calls a tap after every layer."""
        source = self.graph.graph_module
        graph = fx.Graph()
        copies: dict[fx.Node, fx.Node] = {}
        result = graph.graph_copy(source.graph, copies)
        graph.output(result)
        by_fx = {node.fx_name: node for node in self.graph.nodes if node.fx_name}
        fire = self._fire

        def advlens_tap(value: torch.Tensor, layer: str, protect: bool) -> torch.Tensor:
            return fire(layer, value, protect)

        for original, copy in copies.items():
            node = by_fx.get(original.name)
            if node is None:
                continue
            with graph.inserting_after(copy):
                tap = graph.call_function(advlens_tap, (copy, node.name, node.protect))
            copy.replace_all_uses_with(tap, delete_user_cb=lambda user, _tap=tap: user is not _tap)
        return fx.GraphModule(source, graph)
