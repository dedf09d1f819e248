"""The on-disk analysis store: Zarr arrays plus a versioned JSON manifest, written stage by stage."""

from advlens.store.manifest import SCHEMA_VERSION, STAGES, config_hash
from advlens.store.reader import AnalysisStore, open_store
from advlens.store.writer import StageWriter, StoreWriter

__all__ = ["AnalysisStore", "open_store", "StoreWriter", "StageWriter", "SCHEMA_VERSION", "STAGES", "config_hash"]
