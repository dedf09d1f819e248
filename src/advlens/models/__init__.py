"""Models: the adapter every computation uses, built-in architectures and the spec loader."""

from advlens.models.adapter import Activations, AnalysedModel, recording
from advlens.models.registry import MODEL_SPECS, load_model

__all__ = ["AnalysedModel", "Activations", "recording", "load_model", "MODEL_SPECS"]
