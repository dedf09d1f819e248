"""The computation packages import without the store's, the app's and the profiles' libraries, so a benchmark runs
on a bare GPU machine that has only torch and numpy; the top-level names still resolve where they are installed."""

from __future__ import annotations

import subprocess
import sys

import advlens
from advlens.errors import AdvlensError
from advlens.store import open_store

BARE = """
import sys
for name in ("zarr", "dash", "umap", "numcodecs"):
    sys.modules[name] = None  # an import of any of them fails
import advlens.attacks, advlens.faithfulness, advlens.measures, advlens.models, advlens.pathways
from advlens.models.registry import load_model
model = load_model("fashion-resnet")
import advlens
assert advlens.AdvlensError.__name__ == "AdvlensError"
try:
    advlens.open_store
except ImportError:
    print("store needs zarr")
"""


def test_the_computation_packages_import_without_zarr_dash_or_umap():
    done = subprocess.run([sys.executable, "-c", BARE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "store needs zarr"


def test_the_top_level_names_are_the_subpackages_objects():
    assert advlens.open_store is open_store and advlens.AdvlensError is AdvlensError
    assert set(advlens.__all__) <= set(dir(advlens)) | set(advlens._EXPORTS) | {"__version__"}
