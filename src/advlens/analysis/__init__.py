"""A session over one store: cached on-demand computations the views ask for."""

from advlens.analysis.session import NEURON_MEASURES, SORT_ORDERS, Session

__all__ = ["Session", "SORT_ORDERS", "NEURON_MEASURES"]
