"""The ``prepare`` pipeline: a registry of stages (``stages``), one module per stage family.

Paper 001's stages (``stages_core``): predict → attack → activations → statistics → projections;
``stages_features``: feature visualisations and dataset examples of every channel (needs predict).
"""

from advlens.pipeline.config import PrepareConfig, check_device
from advlens.pipeline.prepare import check_compatible, prepare

__all__ = ["PrepareConfig", "prepare", "check_compatible", "check_device"]
