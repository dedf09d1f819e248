"""advlens: visual analytics of how adversarial attacks fool convolutional networks."""

from __future__ import annotations

import os

# OpenMP threads that wait for a descheduled peer sleep instead of spinning (unless the user set a policy): on a
# busy machine spinning burnt 2x the CPU of a gradient pass and took 1.7x the wall time (benchmarks/sweep_stage.py);
# it must be set before torch starts its OpenMP pool, so here, before any import of torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_EXPORTS = {"load_dataset": "advlens.data", "ImageDataset": "advlens.data", "AdvlensError": "advlens.errors",
            "load_model": "advlens.models", "AnalysedModel": "advlens.models", "open_store": "advlens.store",
            "AnalysisStore": "advlens.store"}
"""Top-level names, imported on first use (PEP 562), so ``import advlens.measures`` or ``advlens.models`` works
where the store's libraries (zarr) are not installed, e.g. a bare GPU machine running a benchmark."""

__all__ = ["load_dataset", "load_model", "open_store", "ImageDataset", "AnalysedModel", "AnalysisStore",
           "AdvlensError", "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advlens' has no attribute {name!r}")
