"""The river view's rule-based layout of three datapaths (paper 003 §5.2, Fig. 6; spec-003 §4).

Per displayed column (a gate point, or a collapsed layer group) the source and the target datapath lie
on either side of the axis, their screen gap proportional to ``d1 = dist(src, tar)``; the adversarial
datapath lies between them and splits the gap in the ratio ``d2 : d3`` (``d2 = dist(adv, src)``,
``d3 = dist(adv, tar)``)::

    y_src = −s·d1/2,   y_tar = +s·d1/2,   y_adv = y_src + s·d1·d2/(d2 + d3)   (all on the axis if d2 + d3 = 0)

``s`` fits the largest displayed d1 to the track height. A collapsed group shows the values of its last
gate point. Where d2 rises over at least ``min_steps`` consecutive columns the segment is *diverging*
(the adversarial datapath leaves the source's); where d3 falls over at least ``min_steps`` consecutive
columns it is *merging* (it joins the target's). The distances are whatever the caller passes
(the page passes RMS-normalised per-layer ℓ2 distances of the continuous datapaths). No Dash here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from advlens.errors import ConfigError

PHASES = ("diverging", "merging")


@dataclass(frozen=True)
class RiverColumn:
    """One displayed column of the river.

    Attributes:
        label: the group's name when collapsed (a group of several gate points), else the gate point's.
        layers: the gate points the column stands for (its values are those of the last one).
        group: the layer group the column belongs to.
        collapsed: whether the column is a collapsed group of several gate points.
    """

    label: str
    layers: tuple[str, ...]
    group: str
    collapsed: bool

    @property
    def layer(self) -> str:
        """The gate point whose values the column shows (the last of its group when collapsed)."""
        return self.layers[-1]


@dataclass(frozen=True)
class RiverSegment:
    """A run of columns ``start … end`` (inclusive, ``end − start ≥ min_steps``) of one phase."""

    phase: str
    start: int
    end: int


@dataclass(frozen=True)
class RiverLayout:
    """The river's columns, their screen positions and the tinted segments.

    Attributes:
        columns: the displayed columns, in depth order.
        scale: s, screen units per unit of distance.
        segments: diverging and merging runs over column indices.

    Shape:
        d1, d2, d3, y_src, y_adv, y_tar: (C,) float64, one entry per column.
    """

    columns: tuple[RiverColumn, ...]
    d1: np.ndarray
    d2: np.ndarray
    d3: np.ndarray
    y_src: np.ndarray
    y_adv: np.ndarray
    y_tar: np.ndarray
    scale: float
    segments: tuple[RiverSegment, ...]

    def phase(self, column: int) -> str | None:
        """The phase of a column: ``merging`` wins over ``diverging`` where runs overlap (it is nearer the
        prediction), None outside every run."""
        found = [s.phase for s in self.segments if s.start <= column <= s.end]
        return "merging" if "merging" in found else (found[0] if found else None)

    def column_of(self, layer: str) -> int | None:
        """The column showing ``layer`` (a gate point inside a collapsed group maps to the group's column)."""
        return next((i for i, c in enumerate(self.columns) if layer in c.layers), None)


def river_positions(d1: np.ndarray, d2: np.ndarray, d3: np.ndarray, scale: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_src, y_adv, y_tar) of the rule-based layout at screen scale ``scale``.

    Shape: d1, d2, d3 (C,) non-negative → three (C,) float64 arrays.
    """
    d1, d2, d3 = (np.asarray(d, dtype=np.float64) for d in (d1, d2, d3))
    y_src = -scale * d1 / 2
    y_tar = scale * d1 / 2
    total = d2 + d3
    share = np.divide(d2, total, out=np.full_like(total, 0.5), where=total > 0)
    y_adv = np.where(total > 0, y_src + scale * d1 * share, 0.0)
    return y_src, y_adv, y_tar


def fit_scale(d1: np.ndarray, height: float = 1.0) -> float:
    """s such that the largest d1 spans ``height`` (1.0 when every d1 is 0: all curves lie on the axis)."""
    top = float(np.max(d1, initial=0.0))
    return height / top if top > 0 else 1.0


def trend_runs(values: np.ndarray, rising: bool, min_steps: int = 2) -> list[tuple[int, int]]:
    """Maximal runs ``(start, end)`` of strictly rising (or falling) steps, at least ``min_steps`` steps long.

    Shape: values (C,) → runs of indices into it, ``end − start`` = the number of steps.
    """
    values = np.asarray(values, dtype=np.float64)
    steps = np.diff(values) > 0 if rising else np.diff(values) < 0
    runs, start = [], None
    for i, step in enumerate([*steps.tolist(), False]):
        if step and start is None:
            start = i
        elif not step and start is not None:
            if i - start >= min_steps:
                runs.append((start, i))
            start = None
    return runs


def river_columns(layers: Sequence[str], groups: Sequence[tuple[str, Sequence[str]]] | None = None,
                  expanded: Collection[str] = ()) -> list[RiverColumn]:
    """The displayed columns: one per gate point of an expanded (or single-layer) group, one per collapsed group.

    ``groups`` lists (group name, its gate points) in depth order and must cover ``layers`` exactly, each
    group's points consecutive; without groups every gate point is its own column.
    """
    layers = list(layers)
    if groups is None:
        groups = [(name, [name]) for name in layers]
    flat = [layer for _, members in groups for layer in members]
    if flat != layers:
        raise ConfigError(f"the layer groups ({', '.join(g for g, _ in groups)}) must list the gate points "
                          f"{', '.join(layers)} once each, in order")
    unknown = set(expanded) - {g for g, _ in groups}
    if unknown:
        raise ConfigError(f"cannot expand {', '.join(sorted(unknown))}: the groups are "
                          f"{', '.join(g for g, _ in groups)}")
    columns = []
    for name, members in groups:
        members = tuple(members)
        if not members:
            raise ConfigError(f"layer group {name!r} has no gate point")
        if len(members) == 1 or name in expanded:
            columns.extend(RiverColumn(m, (m,), name, False) for m in members)
        else:
            columns.append(RiverColumn(name, members, name, True))
    return columns


def river_layout(layers: Sequence[str], d1: Sequence[float], d2: Sequence[float], d3: Sequence[float], *,
                 groups: Sequence[tuple[str, Sequence[str]]] | None = None, expanded: Collection[str] = (),
                 height: float = 1.0, min_steps: int = 2) -> RiverLayout:
    """The river of three datapaths over gate points ``layers`` (see the module docstring).

    Args:
        layers: gate points in depth order.
        d1, d2, d3: per gate point dist(src, tar), dist(adv, src), dist(adv, tar) (≥ 0, finite).
        groups: layer groups (name, gate points) in depth order; a group not in ``expanded`` is one column.
        height: the screen span of the largest displayed d1.
        min_steps: consecutive rising d2 / falling d3 steps that make a diverging / merging segment.

    Shape: d1, d2, d3 (L,) with L = len(layers).
    """
    d = np.asarray([d1, d2, d3], dtype=np.float64)
    if d.ndim != 2 or d.shape[1] != len(layers):
        raise ConfigError(f"d1, d2 and d3 need one value per gate point ({len(layers)}), got shape {d.shape[1:]}")
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ConfigError("datapath distances must be finite and non-negative")
    if height <= 0 or min_steps < 1:
        raise ConfigError(f"height must be > 0 and min_steps ≥ 1, got {height} and {min_steps}")
    columns = river_columns(layers, groups, expanded)
    index = {name: i for i, name in enumerate(layers)}
    rows = [index[c.layer] for c in columns]
    c1, c2, c3 = d[0, rows], d[1, rows], d[2, rows]
    scale = fit_scale(c1, height)
    y_src, y_adv, y_tar = river_positions(c1, c2, c3, scale)
    segments = [RiverSegment("diverging", a, b) for a, b in trend_runs(c2, True, min_steps)]
    segments += [RiverSegment("merging", a, b) for a, b in trend_runs(c3, False, min_steps)]
    return RiverLayout(columns=tuple(columns), d1=c1, d2=c2, d3=c3, y_src=y_src, y_adv=y_adv, y_tar=y_tar,
                       scale=scale, segments=tuple(sorted(segments, key=lambda s: (s.start, s.phase))))


__all__ = ["PHASES", "RiverColumn", "RiverLayout", "RiverSegment", "fit_scale", "river_columns", "river_layout",
           "river_positions", "trend_runs"]
