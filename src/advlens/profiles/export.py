"""Export of a Layer View selection as NPZ or CSV bytes (paper 002 §4.4; spec-002 §1.7).

The export holds the reduced data (one output's shape) and a per-unit table over the chosen group:
the unit scalar of the reduced data and its rank (1 = highest), and the maximum, minimum, mean and
standard deviation of the unit's scalar over the group's images; the NPZ adds the unit × unit
covariance of the unit scalars over a background group, for the statistics paper 002's authors ran
outside their tool.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

import numpy as np

from advlens.errors import ConfigError
from advlens.profiles._arrays import ArrayLike, as_array
from advlens.profiles.reductions import resolve_unit_scalar, unit_scalars

UNIT_COLUMNS = ("unit", "rank", "value", "group_max", "group_min", "group_mean", "group_std")


@dataclass(frozen=True, eq=False)
class LayerExport:
    """A Layer View selection ready to download.

    Attributes:
        layer, reduction, unit_scalar: what was shown (the resolved unit scalar, never ``auto``).
        reduced: the reduced data.
        table: the per-unit columns of :data:`UNIT_COLUMNS`.
        covariance: unit × unit covariance of the unit scalars over the background group, or None.
        meta: anything else worth keeping (image ids, set name), JSON-friendly.

    Shape:
        reduced: (C, H, W) or (C,); table[column]: (C,); covariance: (C, C).
    """

    layer: str
    reduction: str
    unit_scalar: str
    reduced: np.ndarray
    table: dict[str, np.ndarray]
    covariance: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def to_npz(self) -> bytes:
        """Every array (``reduced``, the table's columns, ``covariance``) and a JSON ``meta`` string."""
        arrays = {"reduced": self.reduced, **{f"unit_{k}" if k != "unit" else "unit": v for k, v in self.table.items()}}
        if self.covariance is not None:
            arrays["covariance"] = self.covariance
        info = {"layer": self.layer, "reduction": self.reduction, "unit_scalar": self.unit_scalar, **self.meta}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(json.dumps(info)), **arrays)
        return buffer.getvalue()

    def to_csv(self) -> bytes:
        """The per-unit table, one row per unit, with a ``#`` comment line naming the selection."""
        text = io.StringIO()
        text.write(f"# layer={self.layer} reduction={self.reduction} unit_scalar={self.unit_scalar}\n")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(UNIT_COLUMNS)
        for row in range(len(self.table["unit"])):
            writer.writerow([_cell(self.table[column][row]) for column in UNIT_COLUMNS])
        return text.getvalue().encode("utf-8")


def _cell(value) -> str:
    return str(int(value)) if isinstance(value, (np.integer, int)) else repr(float(value))


def group_scalars(activations: ArrayLike, mode: str) -> np.ndarray:
    """Each image's unit scalars. Shape: activations (N, C, H, W) or (N, C); returns float64 (N, C)."""
    array = as_array(activations)
    mode = resolve_unit_scalar(mode, array)
    flat = array.reshape(array.shape[0], array.shape[1], -1).astype(np.float64)
    return flat.max(axis=2) if mode == "max" else np.abs(flat).sum(axis=2)


def layer_export(layer: str, reduction: str, reduced: ArrayLike, group: ArrayLike, unit_scalar: str = "auto",
                 background: ArrayLike | None = None, meta: dict | None = None) -> LayerExport:
    """Collect a Layer View selection for export.

    Args:
        layer, reduction: the layer and reduction shown.
        reduced: the reduced data (from :func:`~advlens.profiles.reductions.reduce`).
        group: the outputs of the set the reduction ran over (its images' statistics).
        unit_scalar: ``max``, ``abs_sum`` or ``auto`` (decided on ``reduced`` and ``group``).
        background: outputs of the background group for the unit × unit covariance (≥ 2 images).
        meta: extra JSON-friendly facts to keep (image ids, set name).

    Shape:
        reduced: (C, H, W) or (C,); group, background: (N, C, H, W) or (N, C).
    """
    data = as_array(reduced)
    outputs = as_array(group)
    if outputs.ndim != data.ndim + 1 or outputs.shape[1:] != data.shape or len(outputs) == 0:
        raise ConfigError(f"group outputs {outputs.shape} do not match the reduced data {data.shape}: give the "
                          "(N, …) outputs of the images the reduction ran over")
    mode = resolve_unit_scalar(unit_scalar, data, outputs)
    values = unit_scalars(data, mode)
    rank = np.empty(values.size, dtype=np.int64)
    rank[np.lexsort((np.arange(values.size), -values))] = np.arange(1, values.size + 1)
    per_image = group_scalars(outputs, mode)
    table = {"unit": np.arange(values.size, dtype=np.int64), "rank": rank, "value": values,
             "group_max": per_image.max(axis=0), "group_min": per_image.min(axis=0),
             "group_mean": per_image.mean(axis=0), "group_std": per_image.std(axis=0)}
    covariance = None
    if background is not None:
        reference = as_array(background)
        if reference.shape[1:] != data.shape or len(reference) < 2:
            raise ConfigError(f"background outputs {reference.shape} must be ≥ 2 images shaped like {data.shape}")
        covariance = np.cov(group_scalars(reference, mode), rowvar=False).reshape(values.size, values.size)
    return LayerExport(layer, reduction, mode, data, table, covariance, dict(meta or {}))
