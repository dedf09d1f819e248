"""The Layer View's colour convention for signed data (spec-002 §2.3, G-16).

Signed data (a difference, a layer with negative outputs) is drawn with RdBu centred at 0 over a
symmetric range ±max|v|: negative red, positive blue. With ``difference(adversarial, control)`` blue
means stronger in the adversarial, red stronger in the control, which matches both paper 002 §5.2 and
Fig. 9. The scale is spelt out here because plotly.js' built-in ``"RdBu"`` runs the other way (blue at
the low end), so a figure dict naming it would swap the meaning.
"""

from __future__ import annotations

import numpy as np

from advlens.profiles._arrays import ArrayLike, as_array

SIGNED_COLORSCALE: list[list] = [
    [0.0, "rgb(103,0,31)"], [0.1, "rgb(178,24,43)"], [0.2, "rgb(214,96,77)"], [0.3, "rgb(244,165,130)"],
    [0.4, "rgb(253,219,199)"], [0.5, "rgb(247,247,247)"], [0.6, "rgb(209,229,240)"], [0.7, "rgb(146,197,222)"],
    [0.8, "rgb(67,147,195)"], [0.9, "rgb(33,102,172)"], [1.0, "rgb(5,48,97)"],
]
"""ColorBrewer RdBu as a Plotly colorscale, red (low, negative) → white (0) → blue (high, positive)."""


def symmetric_range(data: ArrayLike) -> tuple[float, float]:
    """(−m, m) with m = max |finite value|: the colour range of signed data, centred at 0; (−1, 1) for
    data that is all zero."""
    array = as_array(data).astype(np.float64)
    finite = np.abs(array[np.isfinite(array)])
    bound = float(finite.max()) if finite.size else 0.0
    bound = bound if bound > 0 else 1.0
    return -bound, bound
