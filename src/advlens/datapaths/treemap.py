"""The treemap set view of one layer (paper 003 §5.3, Fig. 7, Eq. 6; spec-003 §4).

Given the critical feature maps of up to three datapaths at one layer (sets ``A_i``):

1. **Venn atoms** ``R_S = ∩_{i∈S} A_i \\ ∪_{j∉S} A_j`` for every non-empty S (at most 7 for 3 sets);
2. **hierarchy**: root → one node per set; each set's unique atom under it; each shared atom (|S| ≥ 2) under
   the *largest* set of S (ties: the earlier set in ``priority``, by default the order the sets are given;
   the page passes adv, src, tar);
3. **squarified treemap** (Bruls et al., the ``squarify`` package) whose leaves are single feature maps of equal
   area, so every node's area is proportional to its number of maps; within an atom the maps are sorted by
   the encoded value, largest first;
4. **Eq. 6**: among the candidate layouts (every order of the sets × for each set its shared atoms placed
   before or after its unique atom: 3!·2³ = 48 for three sets) the one minimising
   ``Σ_{S, |S|≥2} ‖center(R_S) − mean_{i∈S} center(A_i)‖²`` is kept.

``center(A_i)`` is the centre of set i's cell. A set whose maps all lie in shared atoms placed under larger
sets has no cell of its own; its centre is then the area-weighted centroid of its atoms' cells. No Dash here.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import squarify

from advlens.errors import ConfigError

MAX_SETS = 3

Atom = frozenset
"""An atom's key: the indices of the sets that contain it (``frozenset({0, 2})`` = in sets 0 and 2 only)."""


@dataclass(frozen=True)
class Rect:
    """An axis-aligned cell: corner (x, y), width dx, height dy."""

    x: float
    y: float
    dx: float
    dy: float

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.dx / 2, self.y + self.dy / 2

    @property
    def area(self) -> float:
        return self.dx * self.dy

    def contains(self, other: Rect, tol: float = 1e-9) -> bool:
        """Whether ``other`` lies inside this cell (up to ``tol``)."""
        return (other.x >= self.x - tol and other.y >= self.y - tol and other.x + other.dx <= self.x + self.dx + tol
                and other.y + other.dy <= self.y + self.dy + tol)


@dataclass(frozen=True)
class Leaf:
    """One feature map's cell."""

    item: int
    atom: Atom
    rect: Rect


@dataclass(frozen=True)
class TreemapLayout:
    """One laid-out treemap.

    Attributes:
        atoms: the non-empty Venn atoms and their maps (sorted ids).
        parents: the set each atom sits under.
        order: the sets' order in the top-level squarify call.
        shared_first: per set (by set index), whether its shared atoms precede its unique atom.
        set_rects: each set's cell (sets without a cell are absent).
        atom_rects: each atom's cell.
        leaves: every map's cell (empty when built without leaves).
        cost: the Eq. 6 objective of this layout.
    """

    atoms: dict[Atom, tuple[int, ...]]
    parents: dict[Atom, int]
    order: tuple[int, ...]
    shared_first: tuple[bool, ...]
    set_rects: dict[int, Rect]
    atom_rects: dict[Atom, Rect]
    leaves: tuple[Leaf, ...]
    cost: float

    def set_center(self, index: int) -> tuple[float, float]:
        """Centre of set ``index`` (its cell, else the area-weighted centroid of its atoms' cells)."""
        if index in self.set_rects:
            return self.set_rects[index].center
        rects = [r for a, r in self.atom_rects.items() if index in a]
        if not rects:
            raise ConfigError(f"set {index} is empty: it has no place in the treemap")
        weights = np.array([r.area for r in rects])
        centers = np.array([r.center for r in rects])
        x, y = (weights[:, None] * centers).sum(axis=0) / weights.sum()
        return float(x), float(y)


def check_sets(sets: Sequence[Collection[int]]) -> list[frozenset[int]]:
    """The sets as frozensets of non-negative map ids (one to :data:`MAX_SETS` of them)."""
    if not 1 <= len(sets) <= MAX_SETS:
        raise ConfigError(f"the treemap shows 1 to {MAX_SETS} sets of feature maps, got {len(sets)}")
    out = []
    for i, values in enumerate(sets):
        items = frozenset(int(v) for v in values)
        if any(v < 0 for v in items):
            raise ConfigError(f"set {i} holds a negative feature map id; ids are channels 0 … K−1")
        out.append(items)
    return out


def venn_atoms(sets: Sequence[Collection[int]]) -> dict[Atom, tuple[int, ...]]:
    """The non-empty atoms ``R_S``: maps in exactly the sets of S. They partition the union of the sets."""
    checked = check_sets(sets)
    atoms: dict[Atom, list[int]] = {}
    for item in sorted(frozenset().union(*checked)):
        key = frozenset(i for i, s in enumerate(checked) if item in s)
        atoms.setdefault(key, []).append(item)
    return {key: tuple(items) for key, items in sorted(atoms.items(), key=lambda kv: (len(kv[0]), sorted(kv[0])))}


def _priority(count: int, priority: Sequence[int] | None) -> list[int]:
    if priority is None:
        return list(range(count))
    if sorted(priority) != list(range(count)):
        raise ConfigError(f"priority must order the set indices 0 … {count - 1} once each, got {list(priority)}")
    return list(priority)


def atom_parents(sets: Sequence[Collection[int]], priority: Sequence[int] | None = None) -> dict[Atom, int]:
    """The set each atom sits under: its only set, or for a shared atom the largest of its sets (ties: the one
    earlier in ``priority``)."""
    checked = check_sets(sets)
    rank = {s: r for r, s in enumerate(_priority(len(checked), priority))}
    return {key: min(key, key=lambda i: (-len(checked[i]), rank[i])) for key in venn_atoms(checked)}


def candidates(count: int) -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """Every (set order, shared-first flags) the Eq. 6 search tries: count!·2^count of them (48 for 3 sets)."""
    return [(order, flags) for order in itertools.permutations(range(count))
            for flags in itertools.product((True, False), repeat=count)]


def _children(atoms: Mapping[Atom, tuple[int, ...]], parents: Mapping[Atom, int], index: int,
              shared_first: bool) -> list[Atom]:
    """The atoms under set ``index`` in drawing order: the unique atom and the shared ones (larger S first)."""
    mine = [a for a in atoms if parents[a] == index]
    unique = [a for a in mine if len(a) == 1]
    shared = sorted((a for a in mine if len(a) > 1), key=lambda a: (-len(a), sorted(a)))
    return shared + unique if shared_first else unique + shared


def _split(rect: Rect, counts: Sequence[int]) -> list[Rect]:
    """``rect`` squarified into cells of areas proportional to ``counts`` (all > 0), in the given order."""
    total = float(sum(counts))
    sizes = [c * rect.dx * rect.dy / total for c in counts]
    return [Rect(r["x"], r["y"], r["dx"], r["dy"]) for r in squarify.squarify(sizes, rect.x, rect.y, rect.dx, rect.dy)]


def eq6_cost(layout_atoms: Mapping[Atom, Rect], set_center) -> float:
    """Σ over shared atoms S of ‖center(R_S) − mean_{i∈S} center(A_i)‖² (paper 003 Eq. 6)."""
    cost = 0.0
    for atom, rect in layout_atoms.items():
        if len(atom) < 2:
            continue
        mean = np.mean([set_center(i) for i in sorted(atom)], axis=0)
        cost += float(np.sum((np.asarray(rect.center) - mean) ** 2))
    return cost


def candidate_layout(sets: Sequence[Collection[int]], order: Sequence[int], shared_first: Sequence[bool], *,
                     width: float = 1.0, height: float = 1.0, priority: Sequence[int] | None = None,
                     values: Mapping[int, float] | Sequence[float] | np.ndarray | None = None,
                     leaves: bool = True) -> TreemapLayout:
    """The treemap of one candidate: sets squarified in ``order``, each set's shared atoms first or last.

    Args:
        sets: the critical maps of each datapath at this layer (1 to 3 sets of map ids).
        order: a permutation of the set indices.
        shared_first: per set index, whether its shared atoms come before its unique atom.
        values: the encoded value of each map (indexable by map id); maps are sorted by it within an atom.
        leaves: whether to lay out the single maps too (the Eq. 6 search needs only sets and atoms).
    """
    checked = check_sets(sets)
    count = len(checked)
    if sorted(order) != list(range(count)) or len(shared_first) != count:
        raise ConfigError(f"a candidate needs an order of the {count} sets and one shared-first flag per set")
    if width <= 0 or height <= 0:
        raise ConfigError(f"the treemap needs a positive width and height, got {width} × {height}")
    return _layout(venn_atoms(checked), atom_parents(checked, priority), count, order, shared_first, width, height,
                   values, leaves)


def _layout(atoms: dict[Atom, tuple[int, ...]], parents: dict[Atom, int], count: int, order: Sequence[int],
            shared_first: Sequence[bool], width: float, height: float,
            values: Mapping[int, float] | Sequence[float] | np.ndarray | None, leaves: bool) -> TreemapLayout:
    """:func:`candidate_layout` once the atoms and their parents are known (checked inputs)."""
    children = {i: _children(atoms, parents, i, bool(shared_first[i])) for i in range(count)}
    sizes = {i: sum(len(atoms[a]) for a in children[i]) for i in range(count)}
    drawn = [i for i in order if sizes[i] > 0]
    set_rects: dict[int, Rect] = {}
    atom_rects: dict[Atom, Rect] = {}
    if drawn:
        for i, rect in zip(drawn, _split(Rect(0.0, 0.0, float(width), float(height)), [sizes[i] for i in drawn])):
            set_rects[i] = rect
            for atom, cell in zip(children[i], _split(rect, [len(atoms[a]) for a in children[i]])):
                atom_rects[atom] = cell
    leaf_cells: list[Leaf] = []
    if leaves:
        for atom, rect in atom_rects.items():
            items = sorted(atoms[atom], key=lambda m: (-float(values[m]), m)) if values is not None else atoms[atom]
            leaf_cells.extend(Leaf(m, atom, cell) for m, cell in zip(items, _split(rect, [1] * len(items))))
    layout = TreemapLayout(atoms=atoms, parents=parents, order=tuple(order),
                           shared_first=tuple(map(bool, shared_first)), set_rects=set_rects, atom_rects=atom_rects,
                           leaves=tuple(leaf_cells), cost=0.0)
    cost = eq6_cost(atom_rects, layout.set_center)
    return TreemapLayout(**{**layout.__dict__, "cost": cost})


def treemap_layout(sets: Sequence[Collection[int]], *, width: float = 1.0, height: float = 1.0,
                   priority: Sequence[int] | None = None,
                   values: Mapping[int, float] | Sequence[float] | np.ndarray | None = None) -> TreemapLayout:
    """The treemap with the smallest Eq. 6 cost among :func:`candidates` (the first of equal costs), leaves
    included (see the module docstring)."""
    checked = check_sets(sets)
    if width <= 0 or height <= 0:
        raise ConfigError(f"the treemap needs a positive width and height, got {width} × {height}")
    atoms, parents, count = venn_atoms(checked), atom_parents(checked, priority), len(checked)
    best = min(candidates(count),
               key=lambda c: _layout(atoms, parents, count, *c, width, height, None, False).cost)
    return _layout(atoms, parents, count, *best, width, height, values, True)


__all__ = ["Atom", "Leaf", "MAX_SETS", "Rect", "TreemapLayout", "atom_parents", "candidate_layout", "candidates",
           "eq6_cost", "treemap_layout", "venn_atoms"]
