"""Analyses over one store: the shared core (store, model, cache, id checks) and one class per system.

``Session`` is what the app and notebooks use: paper 001's image and neuron space, paper 004's activation
pathways, paper 002's activation profiles, paper 003's datapaths and the intervention checks, on the core.
"""

from advlens.analysis.core import SelectionError, SessionCore
from advlens.analysis.image_space import SORT_ORDERS, ImageSpace
from advlens.analysis.neurons import NEURON_MEASURES, NeuronAnalysis
from advlens.analysis.pathways import ClassPairCounts, PathwayAnalysis, PathwayGraph, PathwayNeuronDetail, SweepInfo
from advlens.analysis.pathways_what_if import AttackedSet, PathwayEdit, PathwaysWhatIfAnalysis
from advlens.analysis.datapaths import (ADVERSARIALNESS, DatapathActivationMaps, DatapathAnalysis, DatapathContribution,
                                        DatapathExamples, DatapathFeatures, GateLayer, PairDatapathJob,
                                        PairDatapaths)
from advlens.analysis.faithfulness import RANKING_SOURCES, FaithfulnessAnalysis, Rankings
from advlens.analysis.profiles import (COLOUR_BY, EXPORT_FORMATS, FLOW_MODES, IMAGES, FlowData, LayerView,
                                       PairProfiles, ProfilesAnalysis, ProfilesBackground, UnitDetail)
from advlens.analysis.session import Session

__all__ = ["Session", "SessionCore", "ImageSpace", "NeuronAnalysis", "SelectionError", "SORT_ORDERS",
           "NEURON_MEASURES", "PathwayAnalysis", "PathwayGraph", "PathwayNeuronDetail", "ClassPairCounts",
           "SweepInfo", "PathwaysWhatIfAnalysis", "PathwayEdit", "AttackedSet", "ProfilesAnalysis",
           "ProfilesBackground", "PairProfiles", "FlowData", "LayerView",
           "UnitDetail", "COLOUR_BY", "FLOW_MODES", "IMAGES", "EXPORT_FORMATS", "DatapathAnalysis", "PairDatapaths",
           "DatapathExamples", "GateLayer", "DatapathContribution", "DatapathActivationMaps", "DatapathFeatures",
           "ADVERSARIALNESS", "PairDatapathJob",
           "FaithfulnessAnalysis", "RANKING_SOURCES", "Rankings"]
