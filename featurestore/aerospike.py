"""The production online store on Aerospike: batch reads with bin selection, newer-wins batch writes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import aerospike
from aerospike import exception as aerr
from aerospike_helpers import expressions as exp
from aerospike_helpers.batch.records import BatchRecords, Write
from aerospike_helpers.operations import operations as ops

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
    now_ms,
    records_matrix,
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
from runtime.config import Settings
from schemas.features import RECORD_SET

DEFAULT_PORT = 3000
CONNECT_TIMEOUT_MS = 1_000  # cluster tend / seed connect
WRITE_TIMEOUT_MS = 10_000  # bulk writes are not on the request path
SCAN_TIMEOUT_MS = 60_000
RECONNECT_BACKOFF_S = 1.0  # after a failed connect, fail fast for this long instead of retrying on every call
MAX_BATCH_KEYS = 5_000  # server batch-max-requests default
OK, NOT_FOUND, GENERATION_ERROR, RECORD_EXISTS, FILTERED_OUT, BATCH_FAILED = 0, 2, 3, 5, 27, -16
MOVED_ON = (NOT_FOUND, GENERATION_ERROR, RECORD_EXISTS)  # a compare-and-set whose record changed since its read
WRITE = aerospike.OPERATOR_WRITE
DOC_BIN = "doc"  # metadata records keep their JSON in one string bin (bin names are limited to 15 bytes)

_TIMEOUT_CODES = frozenset({9, 212})  # client or server timeout, query timeout
_UNAVAILABLE_CODES = frozenset({  # no node reachable or able to serve now: connection, cluster, overload
    -15, -14, -12, -10, -9, -8, -7, -6, -4, 1, 7, 8, 11, 14, 18, 152, 211,
})  # 1: what the client reports for a batch or scan once it has lost every node ("cluster is empty")
_BAD_INPUT_CODES = frozenset({-2, 4, 12, 13, 21})
_CONFIG_CODES = frozenset({-2, *range(50, 100)})  # client parameters and security: faults, not outages
FORBIDDEN = 22
_HINTS = {  # what to change, for result codes whose cause is a known setting
    FORBIDDEN: "; code 22 is the server refusing the operation under its configuration: a record with a TTL "
               "(TRIPSCORE_STORE_TTL_S > 0) is refused by a namespace without `nsup-period`, so set `nsup-period` "
               "(e.g. 120) on the namespace (TRIPSCORE_AEROSPIKE_NAMESPACE; see deploy/aerospike.conf) or "
               "TRIPSCORE_STORE_TTL_S=0",
}


def parse_hosts(hosts: str, tls_name: str = "") -> list[tuple]:
    """`"h1:3000,h2"` as the client's host tuples, with the TLS name appended when set."""
    out: list[tuple] = []
    for item in filter(None, (part.strip() for part in hosts.split(","))):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", str(DEFAULT_PORT))
        if not host or not port.isdigit():
            raise ValueError(f"bad Aerospike host {item!r}: expected host[:port]")
        out.append((host, int(port), tls_name) if tls_name else (host, int(port)))
    if not out:
        raise ValueError("no Aerospike hosts configured (TRIPSCORE_AEROSPIKE_HOSTS)")
    return out


def client_config(settings: Settings) -> dict[str, Any]:
    """The client configuration: hosts, timeouts and retries, credentials and TLS from settings."""
    read = {"total_timeout": settings.aerospike_timeout_ms, "max_retries": settings.aerospike_retries}
    write = {"total_timeout": WRITE_TIMEOUT_MS, "max_retries": settings.aerospike_retries}  # writes are idempotent
    config: dict[str, Any] = {
        "hosts": parse_hosts(settings.aerospike_hosts, settings.aerospike_tls_name),
        "connect_timeout": CONNECT_TIMEOUT_MS,
        "policies": {
            "read": read,
            "batch": read,
            "write": write,
            "remove": write,
            "batch_parent_write": write,
            "query": {"total_timeout": SCAN_TIMEOUT_MS},
            "login_timeout_ms": CONNECT_TIMEOUT_MS,
        },
    }
    if settings.aerospike_user:
        config["user"] = settings.aerospike_user
        config["password"] = settings.aerospike_password
    if settings.aerospike_tls_name:
        config["tls"] = {"enable": True, **({"cafile": settings.aerospike_tls_cafile}
                                            if settings.aerospike_tls_cafile else {})}
    return config


def error_for(code: int | None, message: str) -> StoreError:
    """The store's exception for an Aerospike result code, with what to change when the code says it."""
    message += _HINTS.get(code, "")
    if code in _TIMEOUT_CODES:
        return StoreTimeout(message)
    if code in _UNAVAILABLE_CODES:
        return StoreUnavailable(message)
    if code in _BAD_INPUT_CODES:
        return BadInput(message)
    return StoreError(message)


def _mapped(exc: aerr.AerospikeError, what: str) -> StoreError:
    return error_for(exc.code, f"Aerospike {what}: {exc.msg} (code {exc.code})")


def _newer_than_stored_expr(event_ms: int, n_events: int) -> list:
    """Server-side filter: true when the stored record is older than (`event_ms`, `n_events`) or unversioned.

    A write to a missing (or expired) record creates it without evaluating the filter.
    """
    stored_event = exp.IntBin("_event_ms")
    return exp.Or(
        exp.Not(exp.BinExists("_event_ms")),
        exp.LT(stored_event, event_ms),
        exp.And(exp.Eq(stored_event, event_ms), exp.LT(exp.IntBin("_n_events"), n_events)),
    ).compile()


_EVENT_SLOT, _COUNT_SLOT = -(2**62) + 1, -(2**62) + 2  # placeholders no real version carries
_TEMPLATE = _newer_than_stored_expr(_EVENT_SLOT, _COUNT_SLOT)
_SLOTS = tuple(
    (index, part[2]["val"] == _EVENT_SLOT)
    for index, part in enumerate(_TEMPLATE)
    if isinstance(part[2], dict) and part[2].get("val") in (_EVENT_SLOT, _COUNT_SLOT)
)


def newer_than_stored(event_ms: int, n_events: int) -> list:
    """`_newer_than_stored_expr` compiled once and filled in per record (compiling costs ~50 us a record)."""
    compiled = list(_TEMPLATE)
    for index, is_event in _SLOTS:
        op, result_type, _, count = compiled[index]
        compiled[index] = (op, result_type, {"val": event_ms if is_event else n_events}, count)
    return compiled


def _changes(stored: Mapping[str, Any] | None, bins: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The write operations that turn the `stored` record (as read; None: none) into `bins`: each bin that differs,
    and a removal (a write of None) for each it no longer has. Built as `ops.write` builds them, without a call per
    bin: a record's operations cost about 1 us each in the batch write, so a fold's few changed bins are cheaper
    than all of them."""
    if stored is None:
        return [{"op": WRITE, "bin": name, "val": value} for name, value in bins.items()]
    changes = [{"op": WRITE, "bin": name, "val": value} for name, value in bins.items() if stored.get(name) != value]
    return changes + [{"op": WRITE, "bin": name, "val": None} for name in stored.keys() - bins.keys()]


def check_batch(batch: BatchRecords, allowed: tuple[int, ...], what: str) -> None:
    """Raise the store's error when the whole batch failed, or for the first entry whose result is not `allowed`.

    A whole-batch failure (timeout, no node) leaves the entries short or unanswered: its own code is the error.
    """
    if batch.result not in (OK, BATCH_FAILED):
        raise error_for(batch.result, f"Aerospike {what}: the batch failed (code {batch.result})")
    failed = [record for record in batch.batch_records if record.result not in allowed]
    if failed:
        first = failed[0]
        raise error_for(first.result, f"Aerospike {what}: {len(failed)} of {len(batch.batch_records)} entries "
                                      f"failed, first {first.key[2]!r} (code {first.result})")


class AerospikeStore(OnlineStore):
    """Driver records in `<namespace>.<prefix>driver-features`; one lazily connected client shared by threads."""

    backend = "aerospike"

    def __init__(self, settings: Settings, set_prefix: str = "") -> None:
        self.namespace = settings.aerospike_namespace
        self.record_set = set_prefix + RECORD_SET
        self.metadata_sets = {name: set_prefix + name for name in METADATA_SETS}
        self.location = f"{settings.aerospike_hosts}/{self.namespace}/{self.record_set}"
        self.ttl = settings.store_ttl_s or aerospike.TTL_NEVER_EXPIRE
        self._config = client_config(settings)
        self._lock = threading.Lock()
        self._client: aerospike.Client | None = None
        self._retry_at = 0.0
        self._connect_error: tuple[type[StoreError], str] = (StoreUnavailable, "")
        self._closed = False
        self._bin_lists: dict[tuple[str, ...], list[str]] = {}
        self._bulk_read = {"total_timeout": WRITE_TIMEOUT_MS, "max_retries": settings.aerospike_retries}

    def client(self) -> aerospike.Client:
        """The shared client, connecting on first use (thread-safe); StoreUnavailable when no node answers."""
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                if self._closed:
                    raise StoreError(f"Aerospike store {self.location} is closed")
                if time.monotonic() < self._retry_at:
                    kind, message = self._connect_error
                    raise kind(message)
                try:
                    self._client = aerospike.client(self._config)
                except aerr.AerospikeError as exc:
                    self._retry_at = time.monotonic() + RECONNECT_BACKOFF_S
                    config = exc.code in _CONFIG_CODES  # bad parameters or credentials: retrying cannot help
                    kind, verdict = (StoreError, "refused") if config else (StoreUnavailable, "unreachable")
                    self._connect_error = kind, f"Aerospike {self.location} {verdict}: {exc.msg} (code {exc.code})"
                    raise kind(self._connect_error[1]) from exc
            return self._client

    def _key(self, entity_id: str) -> tuple[str, str, str]:
        return self.namespace, self.record_set, entity_id

    def write(self, records: Iterable[Record]) -> WriteResult:
        prepared, duplicates = prepare(records, now_ms())
        client = self.client()
        written = skipped = 0
        for start in range(0, len(prepared), MAX_BATCH_KEYS):
            batch = BatchRecords([
                Write(
                    self._key(entity_id),
                    [ops.write(name, value) for name, value in bins.items()],
                    policy={
                        "exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE,
                        "ttl": self.ttl,
                        "expressions": newer_than_stored(bins["_event_ms"], bins["_n_events"]),
                    },
                )
                for entity_id, bins in prepared[start : start + MAX_BATCH_KEYS]
            ])
            try:
                client.batch_write(batch)
            except aerr.AerospikeError as exc:
                raise _mapped(exc, "batch write") from exc
            check_batch(batch, (OK, FILTERED_OUT), f"batch write ({written} written before this batch)")
            applied = sum(1 for record in batch.batch_records if record.result == OK)
            written += applied
            skipped += len(batch.batch_records) - applied
        return WriteResult(written=written, skipped=skipped + duplicates)

    def read_current(self, entity_ids: Sequence[str]) -> list[Current]:
        client = self.client()
        current: list[Current] = []
        for start in range(0, len(entity_ids), MAX_BATCH_KEYS):
            keys = [self._key(entity_id) for entity_id in entity_ids[start : start + MAX_BATCH_KEYS]]
            try:  # a bulk read, not the scorer's: the write timeout, not the read deadline
                result = client.batch_read(keys, policy=self._bulk_read)
            except aerr.AerospikeError as exc:
                raise _mapped(exc, "batch read") from exc
            if result.result != OK:
                check_batch(result, (OK, NOT_FOUND), "batch read")
            current += [Current(record.record[2], record.record[1]["gen"]) if record.result == OK else NO_RECORD
                        for record in result.batch_records]
        return current

    def compare_and_set(self, updates: Sequence[Update]) -> list[str]:
        prepared = prepare_updates(updates, now_ms())
        client = self.client()
        moved_on: list[str] = []
        update = {"exists": aerospike.POLICY_EXISTS_UPDATE, "gen": aerospike.POLICY_GEN_EQ, "ttl": self.ttl}
        create = {"exists": aerospike.POLICY_EXISTS_CREATE, "ttl": self.ttl}
        for start in range(0, len(prepared), MAX_BATCH_KEYS):
            chunk = prepared[start : start + MAX_BATCH_KEYS]
            batch = BatchRecords([
                Write(self._key(entity_id), _changes(current.bins, bins), meta={"gen": current.generation},
                      policy=update) if current.generation else
                Write(self._key(entity_id), _changes(None, bins), policy=create)
                for entity_id, bins, current in chunk
            ])
            try:
                client.batch_write(batch)
            except aerr.AerospikeError as exc:
                raise _mapped(exc, "compare-and-set") from exc
            check_batch(batch, (OK, *MOVED_ON), f"compare-and-set ({start} entries before this batch)")
            moved_on += [entity_id for (entity_id, _, _), record in zip(chunk, batch.batch_records)  # noqa: B905
                         if record.result != OK]
        return moved_on

    def read(self, entity_ids: Sequence[str], bins: Sequence[str]) -> list[FeatureRow]:
        names = check_bin_names(bins)
        rows: list[FeatureRow] = []
        for chunk, records, now in self._batch_reads(entity_ids, names):
            rows += [FeatureRow(entity_id, record, names, now)
                     for entity_id, record in zip(chunk, records)]  # noqa: B905 - one record per key
        return rows

    def read_matrix(self, entity_ids: Sequence[str], bins: Sequence[str]) -> FeatureMatrix:
        names = check_bin_names(bins)
        check_numeric_bins(names)
        found: list[dict[str, Any] | None] = []
        now = now_ms()
        for _, records, read_ms in self._batch_reads(entity_ids, names):
            found += records
            now = read_ms
        return records_matrix(found, names, now)

    def _batch_reads(self, entity_ids: Sequence[str], names: tuple[str, ...],
                     ) -> Iterator[tuple[Sequence[str], list[dict[str, Any] | None], int]]:
        """Per batch of at most `MAX_BATCH_KEYS` ids: the ids, their bins (None: no record) and the read time."""
        bin_list = self._bin_lists.get(names)
        if bin_list is None:
            bin_list = self._bin_lists[names] = list(names)
        client = self._client or self.client()
        namespace, record_set = self.namespace, self.record_set
        for start in range(0, len(entity_ids), MAX_BATCH_KEYS):
            chunk = entity_ids[start : start + MAX_BATCH_KEYS]
            try:
                result = client.batch_read([(namespace, record_set, entity_id) for entity_id in chunk], bin_list)
            except aerr.AerospikeError as exc:
                raise _mapped(exc, "batch read") from exc
            now = now_ms()
            if result.result != OK:  # 0 covers found and not found alike
                check_batch(result, (OK, NOT_FOUND), "batch read")
            yield chunk, [record.record[2] if record.result == OK else None for record in result.batch_records], now

    def delete(self, entity_ids: Sequence[str]) -> int:
        client = self.client()
        existed = 0
        for start in range(0, len(entity_ids), MAX_BATCH_KEYS):
            keys = [self._key(entity_id) for entity_id in entity_ids[start : start + MAX_BATCH_KEYS]]
            try:
                result = client.batch_remove(keys)
            except aerr.AerospikeError as exc:
                raise _mapped(exc, "batch remove") from exc
            check_batch(result, (OK, NOT_FOUND), "batch remove")
            existed += sum(1 for record in result.batch_records if record.result == OK)
        return existed

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, "location": self.location}
        try:
            builds = self.client().info_all("build")
        except aerr.AerospikeError as exc:
            return {"ok": False, **out, "error": str(_mapped(exc, "info"))}
        except StoreError as exc:
            return {"ok": False, **out, "error": str(exc)}
        failed = sorted(node for node, (error, _) in builds.items() if error is not None)
        if not builds or failed:
            return {"ok": False, **out, "error": f"no answer from nodes {failed}" if failed else "no node answered"}
        return {"ok": True, **out, "nodes": len(builds),
                "server_versions": sorted({result.strip() for _, result in builds.values() if result})}

    def _scan(self, set_name: str, bins: Sequence[str], callback: Any) -> None:
        query = self.client().query(self.namespace, set_name)
        query.select(*bins)
        try:
            query.foreach(callback)
        except aerr.AerospikeError as exc:
            raise _mapped(exc, f"scan of {set_name}") from exc

    def info(self) -> StoreInfo:
        summary = {"records": 0, "newest": None, "oldest": None, "updated": None}

        def visit(record: tuple) -> None:
            bins = record[2]
            summary["records"] += 1
            event, updated = bins.get("_event_ms"), bins.get("_updated_ms")
            if event is not None:
                summary["newest"] = event if summary["newest"] is None else max(summary["newest"], event)
                summary["oldest"] = event if summary["oldest"] is None else min(summary["oldest"], event)
            if updated is not None:
                summary["updated"] = updated if summary["updated"] is None else max(summary["updated"], updated)

        self._scan(self.record_set, ("_event_ms", "_updated_ms"), visit)
        metadata = {name: len(self.scan_metadata(name)) for name in METADATA_SETS}
        return StoreInfo(self.backend, self.location, summary["records"], summary["newest"], summary["oldest"],
                         summary["updated"], metadata)

    def put_metadata(self, set_name: str, key: str, record: Mapping[str, Any]) -> None:
        doc = metadata_json(set_name, key, record)
        try:
            self.client().put((self.namespace, self.metadata_sets[set_name], key), {DOC_BIN: doc},
                              policy={"exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE})
        except aerr.AerospikeError as exc:
            raise _mapped(exc, f"save of {set_name} {key!r}") from exc

    def get_metadata(self, set_name: str, key: str) -> dict[str, Any] | None:
        check_metadata_key(set_name, key)
        try:
            _, _, bins = self.client().get((self.namespace, self.metadata_sets[set_name], key))
        except aerr.RecordNotFound:
            return None
        except aerr.AerospikeError as exc:
            raise _mapped(exc, f"load of {set_name} {key!r}") from exc
        return json.loads(bins[DOC_BIN])

    def scan_metadata(self, set_name: str) -> list[dict[str, Any]]:
        check_metadata_set(set_name)
        docs: list[dict[str, Any]] = []
        self._scan(self.metadata_sets[set_name], (DOC_BIN,), lambda record: docs.append(json.loads(record[2][DOC_BIN])))
        return docs

    def truncate(self) -> None:
        """Delete every record of this store's sets (driver records and metadata), e.g. before a fresh demo run."""
        for set_name in (self.record_set, *self.metadata_sets.values()):
            try:
                self.client().truncate(self.namespace, set_name, 0)
            except aerr.AerospikeError as exc:
                raise _mapped(exc, f"truncate of {set_name}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"AerospikeStore({self.location!r})"
