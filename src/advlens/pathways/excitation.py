"""Excitation and inhibition of neurons by an attack (Bluff, paper 004 §3.3; spec-004 §4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from advlens.pathways._arrays import as_float_array


def excitation(attacked: Any, benign: Any) -> np.ndarray:
    """How much the attack raises each channel's importance: ``attacked − benign``.

    Positive = *excited* (the attacked images activate the channel more than the benign original
    images), negative = *inhibited*. The same difference of medians serves edges (influence at a
    strength minus the benign influence).

    Shape:
        attacked, benign: (...) of equal shape, e.g. (C,) → (...) float64.
    """
    after = as_float_array(attacked, "attacked importance")
    before = as_float_array(benign, "benign importance")
    if after.shape != before.shape:
        raise ValueError(f"attacked {after.shape} and benign {before.shape} importances differ in shape")
    return after - before
