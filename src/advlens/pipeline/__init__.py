"""The ``prepare`` pipeline: predict → attack → activations → statistics → projections."""

from advlens.pipeline.config import PrepareConfig, check_device
from advlens.pipeline.prepare import check_compatible, prepare

__all__ = ["PrepareConfig", "prepare", "check_compatible", "check_device"]
