"""advlens: visual analytics of how adversarial attacks fool convolutional networks."""

from __future__ import annotations

import os

# OpenMP threads that wait for a descheduled peer sleep instead of spinning (unless the user set a policy): on a
# busy machine spinning burnt 2x the CPU of a gradient pass and took 1.7x the wall time (benchmarks/sweep_stage.py);
# it must be set before torch starts its OpenMP pool, so here, before any import of torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from advlens.data import ImageDataset, load_dataset  # noqa: E402
from advlens.errors import AdvlensError  # noqa: E402
from advlens.models import AnalysedModel, load_model  # noqa: E402
from advlens.store import AnalysisStore, open_store  # noqa: E402

__all__ = ["load_dataset", "load_model", "open_store", "ImageDataset", "AnalysedModel", "AnalysisStore",
           "AdvlensError", "__version__"]
