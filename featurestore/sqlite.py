"""The zero-setup online store: one SQLite file in WAL mode, one writer and many reader processes at once."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

from featurestore.base import (
    NO_RECORD,
    BadInput,
    Current,
    FeatureMatrix,
    FeatureRow,
    OnlineStore,
    Record,
    StoreError,
    StoreInfo,
    StoreTimeout,
    StoreUnavailable,
    Update,
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
    prepare_updates,
)
from schemas.features import BIN_NAMES, BINS, LIST_BINS, RECORD_SET

T = TypeVar("T")
NEVER_MS = 2**63 - 1  # `_expires_ms` of a record without TTL
BUSY_TIMEOUT_MS = 5_000
CHECKPOINT_EVERY_S = 0.5
"""A writing process's checkpointer thread copies the WAL into the database this often, off the writes' path: a
write of a micro-batch of drivers spread over a large fleet dirties a page per record, and SQLite's own checkpoint,
run by the committing writer, took most of such a write (streaming/README.md)."""
WAL_BACKSTOP_PAGES = 16_384  # a writer checkpoints by itself only when the WAL outgrows this (64 MB of 4 KB pages)
MAX_IDS_PER_SELECT = 500
_SQL_TYPES = {"int": "INTEGER", "float": "REAL", "list": "TEXT", "bytes": "BLOB"}  # lists are stored as JSON text
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
_REPLACE = ", ".join(f'"{name}" = excluded."{name}"' for name in (*BIN_NAMES, "_expires_ms"))
_REPLACE += f", _gen = {_TABLE}._gen + 1"
_EXPIRED = f"{_TABLE}._expires_ms <= excluded._updated_ms"  # a record past its TTL counts as none
_UPSERT = (  # newer-wins (`write`)
    f"INSERT INTO {_TABLE} (entity_id, {_COLUMNS}, _expires_ms, _gen) VALUES ({_PARAMS}, 1) "
    f"ON CONFLICT(entity_id) DO UPDATE SET {_REPLACE}"
    f" WHERE excluded._event_ms > {_TABLE}._event_ms"
    f" OR (excluded._event_ms = {_TABLE}._event_ms AND excluded._n_events > {_TABLE}._n_events)"
    f" OR {_EXPIRED}"
)
_CREATE = (  # compare-and-set where there was no record (`compare_and_set`, generation 0)
    f"INSERT INTO {_TABLE} (entity_id, {_COLUMNS}, _expires_ms, _gen) VALUES ({_PARAMS}, 1) "
    f"ON CONFLICT(entity_id) DO UPDATE SET {_REPLACE} WHERE {_EXPIRED}"
)
_SWAP = (  # compare-and-set of a live record at its generation; parameters: a `_CREATE` row, then the generation
    f"UPDATE {_TABLE} SET ({_COLUMNS}, _expires_ms) = ({', '.join('?' * (len(BIN_NAMES) + 1))}), _gen = _gen + 1 "
    f"WHERE entity_id = ? AND _gen = ? AND _expires_ms > ?"
)
_CURRENT = f"SELECT {_COLUMNS}, _gen, entity_id FROM {_TABLE} WHERE entity_id IN ({{marks}}) AND _expires_ms > ?"


def _schema() -> list[str]:
    columns = ", ".join(f'"{spec.name}" {_SQL_TYPES[spec.dtype]}' for spec in BINS)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {_TABLE} (entity_id TEXT PRIMARY KEY NOT NULL, {columns}, "
        f"_expires_ms INTEGER NOT NULL, _gen INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"
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
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()
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
                    f"wal_autocheckpoint = {WAL_BACKSTOP_PAGES}",
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
            if "_gen" not in have:  # a file from before compare-and-set
                conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN _gen INTEGER NOT NULL DEFAULT 0")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _store_error(exc, f"cannot open {self.path}") from exc

    def write(self, records: Iterable[Record]) -> WriteResult:
        stamp = now_ms()
        prepared, duplicates = prepare(records, stamp)
        expires = stamp + self.ttl_ms if self.ttl_ms else NEVER_MS
        rows = [_row(entity_id, bins, expires) for entity_id, bins in prepared]
        written = self._transaction(lambda conn: conn.executemany(_UPSERT, rows).rowcount, "write failed")
        return WriteResult(written=written, skipped=len(rows) - written + duplicates)

    def _transaction(self, body: Callable[[sqlite3.Connection], T], what: str) -> T:
        """`body(connection)` in one write transaction, committed when it returns, rolled back when it raises."""
        conn = self._conn()
        if self._checkpointer is None:
            self._start_checkpointer()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite has already rolled back after a full disk or an I/O error
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _store_error(exc, what) from exc
        return result

    def _start_checkpointer(self) -> None:
        """Start this store's checkpointer thread (`CHECKPOINT_EVERY_S`), once."""
        with self._lock:
            if self._checkpointer is None and not self._closed:
                self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="sqlite-checkpointer",
                                                      daemon=True)
                self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Checkpoints until the store closes, waiting for no lock (a busy moment does what it can, as PASSIVE):
        TRUNCATE, so that a complete one also starts the WAL over. A PASSIVE checkpoint alone never found the WAL
        idle between the partitions' writes, so it grew past 200 MB in a benchmark and every read searched its
        index."""
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # the writes report what is wrong with the file
        try:
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def read_current(self, entity_ids: Sequence[str]) -> list[Current]:
        now = now_ms()
        found: dict[str, Current] = {}
        conn = self._conn()
        try:
            for start in range(0, len(entity_ids), MAX_IDS_PER_SELECT):
                chunk = entity_ids[start : start + MAX_IDS_PER_SELECT]
                sql = _CURRENT.format(marks=", ".join("?" * len(chunk)))
                for row in conn.execute(sql, (*chunk, now)):
                    bins = {name: value for name, value in zip(BIN_NAMES, row) if value is not None}  # noqa: B905
                    for name in LIST_BINS & bins.keys():
                        bins[name] = orjson.loads(bins[name])
                    found[row[-1]] = Current(bins, row[-2])
        except sqlite3.Error as exc:
            raise _store_error(exc, "read failed") from exc
        return [found.get(entity_id, NO_RECORD) for entity_id in entity_ids]

    def compare_and_set(self, updates: Sequence[Update]) -> list[str]:
        stamp = now_ms()
        expires = stamp + self.ttl_ms if self.ttl_ms else NEVER_MS
        creates, swaps = [], []
        for entity_id, bins, current in prepare_updates(updates, stamp):
            row = _row(entity_id, bins, expires)
            if current.generation:
                swaps.append((*row[1:], entity_id, current.generation, stamp))
            else:
                creates.append(row)

        def apply(conn: sqlite3.Connection) -> list[str]:
            # the usual case: every generation still holds, so the whole batch in two statements
            applied = sum(conn.executemany(sql, rows).rowcount for sql, rows in ((_CREATE, creates), (_SWAP, swaps))
                          if rows)
            if applied == len(creates) + len(swaps):
                return []
            conn.execute("ROLLBACK")  # some moved on: find which, one statement each
            conn.execute("BEGIN IMMEDIATE")
            lost = [row[0] for row in creates if conn.execute(_CREATE, row).rowcount == 0]
            return lost + [row[-3] for row in swaps if conn.execute(_SWAP, row).rowcount == 0]

        return self._transaction(apply, "compare-and-set failed")

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
                            values[name] = orjson.loads(values[name])
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

        def remove(conn: sqlite3.Connection) -> int:
            existed = 0
            for start in range(0, len(entity_ids), MAX_IDS_PER_SELECT):
                chunk = entity_ids[start : start + MAX_IDS_PER_SELECT]
                sql = f"DELETE FROM {_TABLE} WHERE entity_id IN ({', '.join('?' * len(chunk))}) RETURNING _expires_ms"
                existed += sum(1 for (expires,) in conn.execute(sql, chunk) if expires > now)
            return existed

        return self._transaction(remove, "delete failed")

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
            checkpointer = self._checkpointer
        self._stop.set()
        if checkpointer is not None:
            checkpointer.join()
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, ttl_s={self.ttl_ms // 1000})"


def _row(entity_id: str, bins: dict[str, Any], expires_ms: int) -> list[Any]:
    """The parameters of an `_UPSERT` or `_CREATE` row: the id, every registry bin (lists as JSON text), the expiry."""
    row = [entity_id, *map(bins.get, BIN_NAMES), expires_ms]
    for position in _LIST_POSITIONS:
        if row[position] is not None:
            row[position] = orjson.dumps(row[position]).decode()
    return row


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
