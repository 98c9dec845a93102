"""The online feature store: one contract (`base`), SQLite and Aerospike backends, metadata."""

from featurestore.base import (
    BadInput,
    Current,
    FeatureRow,
    OnlineStore,
    Record,
    StoreError,
    StoreInfo,
    StoreTimeout,
    StoreUnavailable,
    Update,
    WriteResult,
)
from featurestore.factory import close_stores, open_store, store_settings

__all__ = [
    "BadInput",
    "Current",
    "FeatureRow",
    "OnlineStore",
    "Record",
    "StoreError",
    "StoreInfo",
    "StoreTimeout",
    "StoreUnavailable",
    "Update",
    "WriteResult",
    "close_stores",
    "open_store",
    "store_settings",
]
