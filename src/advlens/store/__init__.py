"""The on-disk analysis store: Zarr arrays plus a versioned JSON manifest, written stage by stage, read verified."""

from advlens.store.integrity import VerifiedArray
from advlens.store.lock import StoreLock
from advlens.store.manifest import SCHEMA_VERSION, STAGES, WEIGHTS_FILE, config_hash
from advlens.store.derived import DerivedResult, DerivedResults
from advlens.store.reader import AnalysisStore, StageGroup, open_store
from advlens.store.writer import StageWriter, StoreWriter

__all__ = ["AnalysisStore", "open_store", "StageGroup", "DerivedResults", "DerivedResult", "VerifiedArray", "StoreWriter", "StageWriter", "StoreLock",
           "SCHEMA_VERSION", "STAGES", "WEIGHTS_FILE", "config_hash"]
