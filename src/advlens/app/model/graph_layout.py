"""Where the Architecture View draws each layer: x = topological depth, y = branch lane (no Dash here).

The *main path* is the longest path from the input to the output (:meth:`ModelGraph.between`); its
layers lie on lane 0 at consecutive depths. Every other layer (a projection shortcut, the second arm
of an inception module) belongs to a *branch*: a connected group of off-path layers, drawn on the
lanes below (y = −1, −2, …) so that branches whose columns overlap never share a lane. Edges are
classified as

* ``main``: between consecutive main-path layers;
* ``shortcut``: an edge that leaves or joins the main path off it, or skips main-path layers (an
  identity shortcut, drawn as an arc above the main lane): what makes a selection non-sequential;
* ``branch``: inside a branch.

Blocks (a layer's enclosing module call, nested ones included) become boxes around their layers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from advlens.models.graph import ModelGraph

ARC_HEIGHT = 0.62
"""Height (in lanes) of the first arc above the main lane; overlapping arcs stack by :data:`ARC_STEP`."""
ARC_STEP = 0.22
BOX_PAD_X = 0.42
BOX_PAD_Y = 0.36
BOX_NEST = 0.07
"""A nested block's box is this much smaller on every side than its parent's padding."""


@dataclass(frozen=True)
class Edge:
    """A drawn edge: ``points`` is the polyline from the source's position to the target's."""

    source: str
    target: str
    kind: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class BlockBox:
    """The box around a block's layers, in data coordinates (``level``: nesting depth, 0 outermost)."""

    name: str
    x0: float
    x1: float
    y0: float
    y1: float
    level: int
    layers: tuple[str, ...]


@dataclass(frozen=True)
class GraphLayout:
    """Positions of every layer of a model graph, its drawn edges and its block boxes.

    Attributes:
        names: the layers in execution order.
        x, y: depth and lane of each layer (same order as ``names``).
        main_path: the layers on the main path, input to output.
        edges: every input → layer edge of the graph, classified and routed.
        blocks: block boxes, outer ones first.
        terminals: the model's input and output layers (drawn as circles).
    """

    names: tuple[str, ...]
    x: tuple[int, ...]
    y: tuple[int, ...]
    main_path: tuple[str, ...]
    edges: tuple[Edge, ...]
    blocks: tuple[BlockBox, ...]
    terminals: tuple[str, ...]
    position: dict[str, tuple[int, int]] = field(repr=False, compare=False, default_factory=dict)

    @property
    def depth(self) -> int:
        """The largest x (the number of columns − 1)."""
        return max(self.x) if self.x else 0

    @property
    def lanes(self) -> int:
        """Lanes used below the main lane (0 for a plain chain)."""
        return -min(self.y) if self.y else 0

    @property
    def arc_top(self) -> float:
        """Highest y any arc reaches (0 without identity shortcuts)."""
        tops = [max(p[1] for p in e.points) for e in self.edges]
        return max([0.0, *tops])

    def shortcut_edges(self) -> list[tuple[str, str]]:
        return [(e.source, e.target) for e in self.edges if e.kind == "shortcut"]


def depths(graph: ModelGraph) -> dict[str, int]:
    """Longest-path depth of every layer from the graph's sources (execution order is topological)."""
    depth: dict[str, int] = {}
    for node in graph.nodes:
        depth[node.name] = 1 + max((depth[p] for p in node.inputs), default=-1)
    return depth


def main_path(graph: ModelGraph) -> list[str]:
    """The longest path from the input to the output layer (both included)."""
    first = graph.nodes[0].name
    return graph.between(first, graph.output) if first != graph.output else [first]


def _components(off: list[str], graph: ModelGraph) -> list[list[str]]:
    """Off-path layers grouped into connected branches (edges between off-path layers), in execution order."""
    parent = {name: name for name in off}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for name in off:
        for source in graph[name].inputs:
            if source in parent:
                parent[root(source)] = root(name)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in off:
        groups[root(name)].append(name)
    return sorted(groups.values(), key=lambda group: off.index(group[0]))


def _lanes(graph: ModelGraph, depth: dict[str, int], on_path: set[str]) -> dict[str, int]:
    """Lane (≥ 1, drawn below the main lane) of every off-path layer."""
    off = [n.name for n in graph.nodes if n.name not in on_path]
    children: dict[str, list[str]] = defaultdict(list)
    for node in graph.nodes:
        for source in node.inputs:
            children[source].append(node.name)
    taken: dict[int, list[tuple[int, int]]] = defaultdict(list)  # lane → occupied column intervals
    lane: dict[str, int] = {}
    for group in _components(off, graph):
        # columns the branch's lanes are busy: from where it forks off to where it joins back
        reach = [depth[s] for n in group for s in graph[n].inputs] + [depth[c] for n in group for c in children[n]]
        start = min([depth[n] for n in group] + reach)
        end = max([depth[n] for n in group] + reach)
        per_column: dict[int, list[str]] = defaultdict(list)
        for name in group:
            per_column[depth[name]].append(name)
        height = max(len(v) for v in per_column.values())
        base = 1
        while any(a <= end and start <= b for offset in range(height) for a, b in taken[base + offset]):
            base += 1
        for offset in range(height):
            taken[base + offset].append((start, end))
        for members in per_column.values():
            for offset, name in enumerate(members):
                lane[name] = base + offset
    return lane


def _arc_levels(spans: list[tuple[int, int]]) -> list[int]:
    """Stack level of each identity-shortcut arc so that arcs over overlapping columns do not coincide."""
    levels: list[int] = []
    placed: list[tuple[int, int, int]] = []
    for a, b in spans:
        level = 0
        while any(lvl == level and pa < b and a < pb for pa, pb, lvl in placed):
            level += 1
        placed.append((a, b, level))
        levels.append(level)
    return levels


def _route(x0: float, y0: float, x1: float, y1: float, source_main: bool) -> tuple[tuple[float, float], ...]:
    """A polyline between two layers: straight on one lane, else an elbow near the end that leaves a lane."""
    if y0 == y1:
        return ((x0, y0), (x1, y1))
    if source_main:  # fork off the main lane, then along the branch's lane
        return ((x0, y0), (x0 + 0.5, y1), (x1, y1))
    return ((x0, y0), (x1 - 0.5, y0), (x1, y1))  # along the branch's lane, then join


def _arc(x0: float, x1: float, height: float) -> tuple[tuple[float, float], ...]:
    return ((x0, 0.0), (x0 + 0.35, height), (x1 - 0.35, height), (x1, 0.0))


def block_parents(block: str) -> list[str]:
    """``layer2.shortcut`` → ``["layer2", "layer2.shortcut"]`` (the block and the blocks around it)."""
    parts = block.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if block else []


def _boxes(graph: ModelGraph, position: dict[str, tuple[int, int]]) -> list[BlockBox]:
    """A box per block call around its layers and its nested blocks' layers."""
    calls = [b for b in graph.blocks() if b]
    members: dict[str, list[str]] = {b: [] for b in calls}
    for node in graph.nodes:
        for outer in block_parents(node.block):
            if outer in members:
                members[outer].append(node.name)
    boxes = []
    for name in calls:
        level = sum(1 for outer in block_parents(name)[:-1] if outer in members)
        xs = [position[n][0] for n in members[name]]
        ys = [position[n][1] for n in members[name]]
        pad_x, pad_y = BOX_PAD_X - BOX_NEST * level, BOX_PAD_Y - BOX_NEST * level
        boxes.append(BlockBox(name, min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y, level,
                              tuple(members[name])))
    return sorted(boxes, key=lambda box: box.level)


def layout_graph(graph: ModelGraph) -> GraphLayout:
    """Place every layer of ``graph`` (x = depth, y = −lane) and route its edges (see the module docstring)."""
    depth = depths(graph)
    path = main_path(graph)
    on_path = set(path)
    lane = _lanes(graph, depth, on_path)
    position = {n.name: (depth[n.name], 0 if n.name in on_path else -lane[n.name]) for n in graph.nodes}
    successor = {a: b for a, b in zip(path, path[1:])}

    edges: list[Edge] = []
    skips: list[tuple[str, str]] = []
    for node in graph.nodes:
        for source in dict.fromkeys(node.inputs):
            (x0, y0), (x1, y1) = position[source], position[node.name]
            if source in on_path and node.name in on_path:
                if successor.get(source) == node.name:
                    edges.append(Edge(source, node.name, "main", ((x0, y0), (x1, y1))))
                else:
                    skips.append((source, node.name))
                continue
            kind = "branch" if source not in on_path and node.name not in on_path else "shortcut"
            edges.append(Edge(source, node.name, kind, _route(x0, y0, x1, y1, source in on_path)))
    spans = [(position[a][0], position[b][0]) for a, b in skips]
    for (a, b), (x0, x1), level in zip(skips, spans, _arc_levels(spans)):
        edges.append(Edge(a, b, "shortcut", _arc(x0, x1, ARC_HEIGHT + ARC_STEP * level)))

    names = tuple(n.name for n in graph.nodes)
    terminals = tuple(dict.fromkeys([graph.nodes[0].name, graph.output]))
    return GraphLayout(names=names, x=tuple(position[n][0] for n in names), y=tuple(position[n][1] for n in names),
                       main_path=tuple(path), edges=tuple(edges), blocks=tuple(_boxes(graph, position)),
                       terminals=terminals, position=position)
