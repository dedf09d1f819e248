"""Analyses over one store: the shared core (store, model, cache, id checks) and one class per system.

``Session`` is what the app and notebooks use: paper 001's image and neuron space and paper 004's
activation pathways on the core.
"""

from advlens.analysis.core import SelectionError, SessionCore
from advlens.analysis.image_space import SORT_ORDERS, ImageSpace
from advlens.analysis.neurons import NEURON_MEASURES, NeuronAnalysis
from advlens.analysis.pathways import ClassPairCounts, PathwayAnalysis, PathwayGraph, PathwayNeuronDetail, SweepInfo
from advlens.analysis.session import Session

__all__ = ["Session", "SessionCore", "ImageSpace", "NeuronAnalysis", "SelectionError", "SORT_ORDERS",
           "NEURON_MEASURES", "PathwayAnalysis", "PathwayGraph", "PathwayNeuronDetail", "ClassPairCounts",
           "SweepInfo"]
