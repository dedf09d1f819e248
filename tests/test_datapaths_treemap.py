"""The treemap set view (spec-003 §4, check A11): Venn atoms of hand-set sets, the hierarchy's largest-set rule and
its tie order, equal-area leaves, and Eq. 6's optimum against a plain enumeration of the 48 candidates whose costs
the test computes from the cells itself."""

from __future__ import annotations

import itertools
import math

import pytest

from advlens.datapaths.treemap import Rect, candidate_layout, treemap_layout, venn_atoms
from advlens.errors import ConfigError

# adv = A, src = B, tar = C (the page's order); worked out by hand:
#   0, 1 only in A; 5, 6 only in C; 2 in A∩B only; 4 in B∩C only; 3 in all three; B has no map of its own
A, B, C = {0, 1, 2, 3}, {2, 3, 4}, {3, 4, 5, 6}
ATOMS = {frozenset({0}): (0, 1), frozenset({2}): (5, 6), frozenset({0, 1}): (2,), frozenset({1, 2}): (4,),
         frozenset({0, 1, 2}): (3,)}

# a richer case for the layout checks: every atom non-empty and of different sizes
RICH = [set(range(0, 30)), set(range(20, 45)) | {60, 61}, set(range(25, 40)) | set(range(45, 60)) | {10, 11, 12, 61}]


def test_venn_atoms_of_hand_set_sets():
    assert venn_atoms([A, B, C]) == ATOMS
    assert venn_atoms([{1, 2}, set()]) == {frozenset({0}): (1, 2)}
    atoms = venn_atoms(RICH)
    assert len(atoms) == 7
    union = sorted(set().union(*RICH))
    assert sorted(m for items in atoms.values() for m in items) == union  # a partition: each map once


def test_shared_atoms_sit_under_the_largest_set_ties_by_priority():
    layout = candidate_layout([A, B, C], (0, 1, 2), (True, True, True))
    # |A| = |C| = 4 > |B| = 3: A∩B → A, B∩C → C, A∩B∩C → A (tie A–C broken by the given order)
    assert layout.parents == {frozenset({0}): 0, frozenset({2}): 2, frozenset({0, 1}): 0, frozenset({1, 2}): 2,
                              frozenset({0, 1, 2}): 0}
    swapped = candidate_layout([A, B, C], (0, 1, 2), (True, True, True), priority=(2, 0, 1))
    assert swapped.parents[frozenset({0, 1, 2})] == 2
    # B has no cell: every map of B sits in a shared atom under A or C
    assert 1 not in layout.set_rects
    with pytest.raises(ConfigError, match="priority"):
        candidate_layout([A, B, C], (0, 1, 2), (True,) * 3, priority=(0, 0, 1))


def _cells_cover(rect: Rect, cells: list[Rect]) -> bool:
    return math.isclose(sum(c.area for c in cells), rect.area, rel_tol=1e-9) and all(rect.contains(c) for c in cells)


def test_a11_atoms_partition_areas_follow_counts_shared_inside_largest_set():
    width, height = 3.0, 2.0
    layout = treemap_layout(RICH, width=width, height=height)
    total = sum(len(s) for s in layout.atoms.values())
    for atom, items in layout.atoms.items():
        expected = width * height * len(items) / total
        assert layout.atom_rects[atom].area == pytest.approx(expected, rel=0.01)
        largest = max(len(RICH[i]) for i in atom)
        parent = layout.parents[atom]
        assert len(RICH[parent]) == largest
        assert layout.set_rects[parent].contains(layout.atom_rects[atom])
    # leaves: one per map, equal areas, inside their atom, covering the whole treemap
    assert sorted(leaf.item for leaf in layout.leaves) == sorted(set().union(*RICH))
    for leaf in layout.leaves:
        assert leaf.rect.area == pytest.approx(width * height / total, rel=1e-9)
        assert layout.atom_rects[leaf.atom].contains(leaf.rect)
    assert _cells_cover(Rect(0, 0, width, height), [leaf.rect for leaf in layout.leaves])


def _center(r: Rect) -> tuple[float, float]:
    return r.x + r.dx / 2, r.y + r.dy / 2


def _hand_cost(layout) -> float:
    """Eq. 6 by a plain loop over the cells (every set has a cell in RICH)."""
    cost = 0.0
    for atom, rect in layout.atom_rects.items():
        if len(atom) < 2:
            continue
        cx, cy = _center(rect)
        mx = sum(_center(layout.set_rects[i])[0] for i in atom) / len(atom)
        my = sum(_center(layout.set_rects[i])[1] for i in atom) / len(atom)
        cost += (cx - mx) ** 2 + (cy - my) ** 2
    return cost


def test_a11_eq6_cost_of_the_chosen_layout_is_minimal_among_all_48_candidates():
    chosen = treemap_layout(RICH, width=1.6, height=1.0)
    costs = {}
    for order in itertools.permutations(range(3)):
        for flags in itertools.product((False, True), repeat=3):
            costs[(order, flags)] = _hand_cost(candidate_layout(RICH, order, flags, width=1.6, height=1.0,
                                                                leaves=False))
    assert len(costs) == 48
    assert _hand_cost(chosen) <= min(costs.values()) + 1e-12
    assert chosen.cost == pytest.approx(_hand_cost(chosen))
    assert max(costs.values()) > 1.5 * min(costs.values())  # the search has something to choose


def test_leaves_are_sorted_by_value_within_each_atom():
    values = {m: float((m * 7) % 11) for m in range(70)}
    layout = treemap_layout(RICH, values=values)
    for atom in layout.atoms:
        order = [leaf.item for leaf in layout.leaves if leaf.atom == atom]
        assert order == sorted(layout.atoms[atom], key=lambda m: (-values[m], m))


def test_two_sets_and_one_set():
    two = treemap_layout([{1, 2, 3}, {3, 4}])
    assert set(two.atoms) == {frozenset({0}), frozenset({1}), frozenset({0, 1})}
    assert two.parents[frozenset({0, 1})] == 0
    one = treemap_layout([{5, 6}])
    assert [leaf.item for leaf in one.leaves] == [5, 6] and one.cost == 0.0
    empty = treemap_layout([set(), set()])
    assert empty.leaves == () and empty.set_rects == {}


def test_bad_sets_are_refused():
    with pytest.raises(ConfigError, match="1 to 3 sets"):
        venn_atoms([{1}, {2}, {3}, {4}])
    with pytest.raises(ConfigError, match="negative"):
        venn_atoms([{-1}])
