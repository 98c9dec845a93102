"""The online feature store: one contract (`base`), SQLite and Aerospike backends, metadata."""

from featurestore.base import (
    BadInput,
    FeatureRow,
    OnlineStore,
    Record,
    StoreError,
    StoreInfo,
    StoreTimeout,
    StoreUnavailable,
    WriteResult,
)
from featurestore.factory import close_stores, open_store

__all__ = [
    "BadInput",
    "FeatureRow",
    "OnlineStore",
    "Record",
    "StoreError",
    "StoreInfo",
    "StoreTimeout",
    "StoreUnavailable",
    "WriteResult",
    "close_stores",
    "open_store",
]
