"""Models: the adapter every computation uses, the model graph, capture, built-in architectures and the spec loader."""

from advlens.models.adapter import Activations, AnalysedModel, recording
from advlens.models.capture import REDUCTIONS
from advlens.models.graph import ModelGraph, build_graph
from advlens.models.layer_node import LayerNode
from advlens.models.receptive_field import ReceptiveField
from advlens.models.registry import MODEL_SPECS, load_model

__all__ = ["AnalysedModel", "Activations", "recording", "load_model", "MODEL_SPECS", "ModelGraph", "LayerNode",
           "ReceptiveField", "REDUCTIONS", "build_graph"]
