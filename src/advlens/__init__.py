"""advlens: visual analytics of how adversarial attacks fool convolutional networks."""

from __future__ import annotations

__version__ = "0.1.0"

from advlens.data import ImageDataset, load_dataset  # noqa: E402
from advlens.errors import AdvlensError  # noqa: E402
from advlens.models import AnalysedModel, load_model  # noqa: E402
from advlens.store import AnalysisStore, open_store  # noqa: E402

__all__ = ["load_dataset", "load_model", "open_store", "ImageDataset", "AnalysedModel", "AnalysisStore",
           "AdvlensError", "__version__"]
