"""The zero-setup online store: one SQLite file in WAL mode, one writer and many reader processes at once."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from featurestore.base import (
    BadInput,
    FeatureMatrix,
    FeatureRow,
    OnlineStore,
    Record,
    StoreError,
    StoreInfo,
    StoreTimeout,
    StoreUnavailable,
    WriteResult,
    check_numeric_bins,
    feature_matrix,
    now_ms,
)
from featurestore.records import (
    METADATA_SETS,
    check_bin_names,
    check_metadata_key,
    check_metadata_set,
    metadata_json,
    prepare,
)
from schemas.features import BIN_NAMES, BINS, LIST_BINS, RECORD_SET

NEVER_MS = 2**63 - 1  # `_expires_ms` of a record without TTL
BUSY_TIMEOUT_MS = 5_000
MAX_IDS_PER_SELECT = 500
_SQL_TYPES = {"int": "INTEGER", "float": "REAL", "list": "TEXT"}  # lists are stored as JSON text
_LIST_POSITIONS = tuple(1 + BIN_NAMES.index(name) for name in sorted(LIST_BINS))  # in an upsert parameter row
_TABLE = f'"{RECORD_SET}"'
_TIMEOUT_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})  # a lock held past busy_timeout
_UNAVAILABLE_CODES = frozenset({  # the file cannot be opened, written or grown right now
    sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOMEM,
})
_BAD_INPUT_CODES = frozenset({sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_RANGE})
_COLUMNS = ", ".join(f'"{name}"' for name in BIN_NAMES)
_PARAMS = ", ".join("?" for _ in range(len(BIN_NAMES) + 2))
_UPSERT = (
    f"INSERT INTO {_TABLE} (entity_id, {_COLUMNS}, _expires_ms) VALUES ({_PARAMS}) "
    f"ON CONFLICT(entity_id) DO UPDATE SET "
    + ", ".join(f'"{name}" = excluded."{name}"' for name in (*BIN_NAMES, "_expires_ms"))
    + f" WHERE excluded._event_ms > {_TABLE}._event_ms"
    f" OR (excluded._event_ms = {_TABLE}._event_ms AND excluded._n_events > {_TABLE}._n_events)"
    f" OR {_TABLE}._expires_ms <= excluded._updated_ms"
)


def _schema() -> list[str]:
    columns = ", ".join(f'"{spec.name}" {_SQL_TYPES[spec.dtype]}' for spec in BINS)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {_TABLE} (entity_id TEXT PRIMARY KEY NOT NULL, {columns}, "
        f"_expires_ms INTEGER NOT NULL) WITHOUT ROWID"
    ]
    statements += [
        f'CREATE TABLE IF NOT EXISTS "{name}" (key TEXT PRIMARY KEY NOT NULL, doc TEXT NOT NULL) WITHOUT ROWID'
        for name in METADATA_SETS
    ]
    return statements


class SQLiteStore(OnlineStore):
    """Driver records in one table (a column per registry bin); one connection per thread."""

    backend = "sqlite"

    def __init__(self, path: Path | str, ttl_s: int = 0) -> None:
        self.path = Path(path)
        self.ttl_ms = ttl_s * 1000
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._selects: dict[tuple[int, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
        self._matrix_selects: dict[tuple[int, tuple[str, ...]], str] = {}
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"SQLite cannot create {self.path.parent}: {exc}") from exc
        self._init_schema(self._conn())

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use; the store's exception when the file cannot be opened."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError(f"SQLite store {self.path} is closed")
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=512)
                for pragma in (
                    f"busy_timeout = {BUSY_TIMEOUT_MS}",
                    "synchronous = NORMAL",
                    "mmap_size = 1073741824",
                    "cache_size = -65536",
                    "temp_store = MEMORY",
                ):
                    conn.execute(f"PRAGMA {pragma}")
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                raise _store_error(exc, f"cannot open {self.path}") from exc
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _schema():
                conn.execute(statement)
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({_TABLE})")}
            for spec in BINS:  # a registry that gained a bin since the file was created
                if spec.name not in have:
                    conn.execute(f'ALTER TABLE {_TABLE} ADD COLUMN "{spec.name}" {_SQL_TYPES[spec.dtype]}')
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _store_error(exc, f"cannot open {self.path}") from exc

    def write(self, records: Iterable[Record]) -> WriteResult:
        stamp = now_ms()
        prepared, duplicates = prepare(records, stamp)
        expires = stamp + self.ttl_ms if self.ttl_ms else NEVER_MS
        rows = []
        for entity_id, bins in prepared:
            row = [entity_id, *map(bins.get, BIN_NAMES), expires]
            for position in _LIST_POSITIONS:
                if row[position] is not None:
                    row[position] = json.dumps(row[position], separators=(",", ":"))
            rows.append(row)
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                written = conn.executemany(_UPSERT, rows).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite has already rolled back after a full disk or an I/O error
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _store_error(exc, "write failed") from exc
        return WriteResult(written=written, skipped=len(rows) - written + duplicates)

    def _select(self, count: int, names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        """SQL selecting `names` then entity_id for `count` ids, and the list bins among `names` (cached)."""
        cached = self._selects.get((count, names))
        if cached is None:
            columns = "".join(f'"{name}", ' for name in names)
            sql = (
                f"SELECT {columns}entity_id FROM {_TABLE} "
                f"WHERE entity_id IN ({', '.join('?' * count)}) AND _expires_ms > ?"
            )
            cached = sql, tuple(name for name in names if name in LIST_BINS)
            self._selects[(count, names)] = cached
        return cached

    def read(self, entity_ids: Sequence[str], bins: Sequence[str]) -> list[FeatureRow]:
        names = check_bin_names(bins)
        now = now_ms()
        found: dict[str, dict[str, Any]] = {}
        conn = self._conn()
        try:
            for start in range(0, len(entity_ids), MAX_IDS_PER_SELECT):
                chunk = entity_ids[start : start + MAX_IDS_PER_SELECT]
                sql, list_names = self._select(len(chunk), names)
                for row in conn.execute(sql, (*chunk, now)):
                    # the row ends with entity_id, past `names`; absent (NULL) bins are left out, as on Aerospike
                    # (a complete row, the usual case, is built in C)
                    values = (dict(zip(names, row)) if None not in row  # noqa: B905
                              else {name: value for name, value in zip(names, row) if value is not None})  # noqa: B905
                    for name in list_names:
                        if name in values:
                            values[name] = json.loads(values[name])
                    found[row[-1]] = values
        except sqlite3.Error as exc:
            raise _store_error(exc, "read failed") from exc
        return [FeatureRow(entity_id, found.get(entity_id), names, now) for entity_id in entity_ids]

    def read_matrix(self, entity_ids: Sequence[str], bins: Sequence[str]) -> FeatureMatrix:
        names = check_bin_names(bins)
        check_numeric_bins(names)
        now = now_ms()
        rows: list[tuple[Any, ...]] = []
        conn = self._conn()
        try:
            for start in range(0, len(entity_ids), MAX_IDS_PER_SELECT):
                chunk = entity_ids[start : start + MAX_IDS_PER_SELECT]
                rows += conn.execute(self._matrix_select(len(chunk), names), (*chunk, now)).fetchall()
        except sqlite3.Error as exc:
            raise _store_error(exc, "read failed") from exc
        return feature_matrix(rows, len(names), now)

    def _matrix_select(self, count: int, names: tuple[str, ...]) -> str:
        """SQL giving one row of `names` per id, in the ids' order, NULLs where there is no record (cached)."""
        sql = self._matrix_selects.get((count, names))
        if sql is None:
            ids = ", ".join(f"({i}, ?)" for i in range(count))
            columns = ", ".join(f't."{name}"' for name in names)
            sql = (f"WITH ids(position, id) AS (VALUES {ids}) SELECT {columns} FROM ids "
                   f"LEFT JOIN {_TABLE} AS t ON t.entity_id = ids.id AND t._expires_ms > ? ORDER BY ids.position")
            self._matrix_selects[(count, names)] = sql
        return sql

    def delete(self, entity_ids: Sequence[str]) -> int:
        now = now_ms()
        conn = self._conn()
        existed = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for start in range(0, len(entity_ids), MAX_IDS_PER_SELECT):
                chunk = entity_ids[start : start + MAX_IDS_PER_SELECT]
                sql = f"DELETE FROM {_TABLE} WHERE entity_id IN ({', '.join('?' * len(chunk))}) RETURNING _expires_ms"
                existed += sum(1 for (expires,) in conn.execute(sql, chunk) if expires > now)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _store_error(exc, "delete failed") from exc
        return existed

    def health(self) -> dict[str, Any]:
        try:
            mode = self._conn().execute("PRAGMA journal_mode").fetchone()[0]
        except (sqlite3.Error, StoreError) as exc:
            return {"ok": False, "backend": self.backend, "location": str(self.path), "error": str(exc)}
        return {"ok": True, "backend": self.backend, "location": str(self.path), "journal_mode": mode,
                "sqlite_version": sqlite3.sqlite_version}

    def info(self) -> StoreInfo:
        conn = self._conn()
        try:
            count, newest, oldest, updated = conn.execute(
                f"SELECT count(*), max(_event_ms), min(_event_ms), max(_updated_ms) FROM {_TABLE} "
                "WHERE _expires_ms > ?",
                (now_ms(),),
            ).fetchone()
            metadata = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in METADATA_SETS}
        except sqlite3.Error as exc:
            raise _store_error(exc, "info failed") from exc
        return StoreInfo(self.backend, str(self.path), count, newest, oldest, updated, metadata)

    def put_metadata(self, set_name: str, key: str, record: Mapping[str, Any]) -> None:
        doc = metadata_json(set_name, key, record)
        try:
            self._conn().execute(f'INSERT OR REPLACE INTO "{set_name}" (key, doc) VALUES (?, ?)', (key, doc))
        except sqlite3.Error as exc:
            raise _store_error(exc, f"cannot save {set_name} {key!r}") from exc

    def get_metadata(self, set_name: str, key: str) -> dict[str, Any] | None:
        check_metadata_key(set_name, key)
        try:
            row = self._conn().execute(f'SELECT doc FROM "{set_name}" WHERE key = ?', (key,)).fetchone()
        except sqlite3.Error as exc:
            raise _store_error(exc, f"cannot load {set_name} {key!r}") from exc
        return json.loads(row[0]) if row else None

    def scan_metadata(self, set_name: str) -> list[dict[str, Any]]:
        check_metadata_set(set_name)
        try:
            rows = self._conn().execute(f'SELECT doc FROM "{set_name}" ORDER BY key').fetchall()
        except sqlite3.Error as exc:
            raise _store_error(exc, f"cannot scan {set_name}") from exc
        return [json.loads(doc) for (doc,) in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, ttl_s={self.ttl_ms // 1000})"


def _store_error(exc: sqlite3.Error, what: str) -> StoreError:
    """The store's exception for an sqlite3 error, by its primary result code (errors of closed objects have none)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    message = f"SQLite {what}: {exc}" + (f" ({exc.sqlite_errorname})" if code is not None else "")
    if primary in _TIMEOUT_CODES:
        return StoreTimeout(message)
    if primary in _UNAVAILABLE_CODES:
        return StoreUnavailable(message)
    if primary in _BAD_INPUT_CODES:
        return BadInput(message)
    return StoreError(message)
