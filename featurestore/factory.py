"""`open_store(settings)`: the process's one store instance per (backend, location), shared by threads."""

from __future__ import annotations

import os
import threading

from featurestore.base import OnlineStore
from runtime.config import Settings, load_settings

BACKENDS = ("sqlite", "aerospike")

_lock = threading.Lock()
_stores: dict[tuple[int, str, str], OnlineStore] = {}


def store_location(settings: Settings) -> str:
    """Where the configured store lives: the SQLite file, or Aerospike hosts, namespace and set prefix."""
    if settings.store == "sqlite":
        return str(settings.sqlite_file.resolve())
    if settings.store == "aerospike":
        return f"{settings.aerospike_hosts}/{settings.aerospike_namespace}/{settings.aerospike_set_prefix}"
    raise ValueError(f"unknown store backend {settings.store!r} (TRIPSCORE_STORE): expected one of {BACKENDS}")


def store_settings(settings: Settings) -> Settings:
    """Settings safe to ship to Spark executors: the SQLite path made absolute."""
    if settings.store != "sqlite":
        return settings
    return settings.with_overrides(sqlite_path=settings.sqlite_file.resolve())


def _create(settings: Settings) -> OnlineStore:
    if settings.store == "sqlite":
        from featurestore.sqlite import SQLiteStore

        return SQLiteStore(settings.sqlite_file, ttl_s=settings.store_ttl_s)
    from featurestore.aerospike import AerospikeStore

    return AerospikeStore(settings, set_prefix=settings.aerospike_set_prefix)


def open_store(settings: Settings | None = None) -> OnlineStore:
    """The shared store for `settings` (default: from the environment); created on first call in each process.

    The first call's settings fix the instance's tunables (TTL, timeouts); don't close it, see `close_stores()`.
    """
    settings = settings or load_settings()
    key = (os.getpid(), settings.store, store_location(settings))  # a forked child must not reuse its parent's
    store = _stores.get(key)
    if store is None:
        with _lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = _create(settings)
    return store


def close_stores() -> None:
    """Close every store opened by this process (at shutdown or between tests)."""
    with _lock:
        stores = [store for (pid, *_), store in _stores.items() if pid == os.getpid()]
        _stores.clear()
    for store in stores:
        store.close()
