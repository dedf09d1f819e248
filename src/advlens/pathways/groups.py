"""The neurons a pathway graph draws in one layer (Bluff, paper 004 §3.2; spec-004 §3).

Four disjoint groups: **original-only** (in the original class's top ``k_benign``, not the target's),
**both** (in both benign top lists), **target-only**, and **attack-only** (in the attacked images'
top ``k_attack`` at some strength, in neither benign top list; the union over strengths).

Ties: channels are ordered by importance, high → low, and an equal importance puts the *lower
channel index* first; a top-k takes the first k of that order (all channels when k ≥ C).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advlens.pathways._arrays import as_float_array, check_count, top_k

GROUPS = ("original", "both", "target", "attack")
"""Group names, in the order the Graph Summary View places them left → right."""

GROUP_COLORS = {"original": "#abdda4", "both": "#fdae61", "target": "#2b83ba", "attack": "#d7191c"}
"""Bluff's colours (paper 004 §3.3): original green, both orange, target blue, attack-only red."""


def _frozen(channels: Any) -> np.ndarray:
    array = np.asarray(sorted(int(c) for c in channels), dtype=np.int64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class NeuronGroups:
    """The drawn channels of one layer, by group; every array is sorted by channel and read-only.

    Attributes:
        original_only, both, target_only, attack_only: channel ids of the four disjoint groups.
        attacked_top: per strength, that strength's top ``k_attack`` channels (sorted by channel),
            including those that are also in a benign group (compare mode uses them).
    """

    original_only: np.ndarray
    both: np.ndarray
    target_only: np.ndarray
    attack_only: np.ndarray
    attacked_top: Mapping[Hashable, np.ndarray] = field(default_factory=dict)

    def members(self, group: str) -> np.ndarray:
        """The channels of ``group`` (one of :data:`GROUPS`)."""
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r}; use one of {', '.join(GROUPS)}")
        return {"original": self.original_only, "both": self.both, "target": self.target_only,
                "attack": self.attack_only}[group]

    def group_of(self, channel: int) -> str | None:
        """The group ``channel`` belongs to, or ``None`` when it is not drawn."""
        for group in GROUPS:
            if int(channel) in self.members(group):
                return group
        return None

    @property
    def drawn(self) -> np.ndarray:
        """Every drawn channel, sorted. Shape: (D,) int64."""
        return _frozen(np.concatenate([self.members(group) for group in GROUPS]))

    def __len__(self) -> int:
        return sum(len(self.members(group)) for group in GROUPS)


def select_neurons(original: Any, target: Any, attacked: Mapping[Hashable, Any],
                   k_benign: int = 10, k_attack: int = 5) -> NeuronGroups:
    """Split one layer's important channels into the four groups of spec-004 §3.

    Args:
        original: importance of each channel for the original class's benign images.
        target: importance for the target class's benign images.
        attacked: ``{strength: importance}`` for the successfully attacked images at each strength
            (may be empty: then there is no attack-only group).
        k_benign: how many top channels of each benign set are drawn (10 in Bluff).
        k_attack: how many top channels of each attacked set are drawn (5 in Bluff).

    Raises:
        ValueError: lengths differ, values are NaN/inf, or a k is negative — before any work.

    Shape:
        original, target, each attacked value: (C,).
    """
    k_benign = check_count(k_benign, "k_benign")
    k_attack = check_count(k_attack, "k_attack")
    first = as_float_array(original, "original importance", ndim=1)
    second = as_float_array(target, "target importance", ndim=1)
    if second.shape != first.shape:
        raise ValueError(f"original importance has {first.size} channels but target importance {second.size}")
    if not isinstance(attacked, Mapping):
        raise ValueError(f"attacked must map each strength to its importance (C,), got {type(attacked).__name__}")
    tables = {}
    for strength, values in attacked.items():
        table = as_float_array(values, f"attacked importance at strength {strength!r}", ndim=1)
        if table.shape != first.shape:
            raise ValueError(f"attacked importance at strength {strength!r} has {table.size} channels, "
                             f"the benign importances {first.size}")
        tables[strength] = table
    top_original = set(top_k(first, k_benign).tolist())
    top_target = set(top_k(second, k_benign).tolist())
    attacked_top = {strength: _frozen(top_k(table, k_attack)) for strength, table in tables.items()}
    recruited = set().union(*(set(t.tolist()) for t in attacked_top.values())) if attacked_top else set()
    return NeuronGroups(
        original_only=_frozen(top_original - top_target),
        both=_frozen(top_original & top_target),
        target_only=_frozen(top_target - top_original),
        attack_only=_frozen(recruited - top_original - top_target),
        attacked_top=attacked_top,
    )
