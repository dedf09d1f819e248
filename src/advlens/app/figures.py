"""Figures as plain dictionaries in Plotly's JSON schema.

Building ``plotly.graph_objects`` validates every property on the server, which costs more than the
data of a view (≈ 0.2–0.3 s for the Neuron Vulnerability View's 256 neurons on 2 cores) and adds
Plotly's default template (≈ 10 kB) to every response. The views build dictionaries instead; the tests
validate them by passing them to ``go.Figure``. Large numeric arrays travel as Plotly's base64 typed
arrays (``{"dtype", "bdata"}``), which Plotly.js decodes without parsing JSON numbers.
"""

from __future__ import annotations

import base64

import numpy as np

DTYPES = {"f8": np.float64, "f4": np.float32, "i4": np.int32, "u4": np.uint32, "i2": np.int16, "u2": np.uint16,
          "i1": np.int8, "u1": np.uint8}


def typed_array(values, dtype: str = "f4") -> dict:
    """A 1-D numeric array as Plotly's typed-array spec (little-endian ``dtype``, e.g. ``"f4"``, ``"i4"``).

    Shape: values (n,) → a dict Plotly.js reads as an n-element typed array.
    """
    array = np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))
    return {"dtype": dtype, "bdata": base64.b64encode(array.tobytes()).decode("ascii")}


def decode(value) -> np.ndarray:
    """A typed-array spec (or a plain list) back as a NumPy array."""
    if isinstance(value, dict) and "bdata" in value:
        dtype = np.dtype(DTYPES[value["dtype"]]).newbyteorder("<")
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=dtype)
    return np.asarray(value)


def figure(data: list[dict], layout: dict) -> dict:
    """A figure dictionary (what ``dcc.Graph`` takes)."""
    return {"data": data, "layout": layout}
