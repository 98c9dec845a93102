"""The one validation of driver records and metadata against the registry, shared by every backend."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from numbers import Integral, Real
from typing import Any

from featurestore.base import BadInput, Current, Record, Update
from schemas.features import BINS_BY_NAME, MAX_BIN_BYTES
from schemas.fields import ID_PATTERN

MAX_ID_BYTES = 64
MAX_LIST_ITEMS = 1024
MAX_BYTES = 64 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
VERSION_BINS = ("_event_ms", "_n_events")
STAMP_BIN = "_updated_ms"
METADATA_SETS = ("fg-metadata", "feature-metadata", "dataset-metadata")

Prepared = tuple[str, dict[str, Any]]
"""(entity id, normalised bins including `_updated_ms`): a record ready for a backend to write."""


def version(bins: Mapping[str, Any]) -> tuple[int, int]:
    """The newer-wins order of a record: (`_event_ms`, `_n_events`)."""
    return bins["_event_ms"], bins["_n_events"]


@lru_cache(maxsize=1024)
def _checked_bins(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        problem = _bin_name_problem(name)
        if problem:
            raise BadInput(f"read: bin {name!r}: {problem}")
    return names


def check_bin_names(names: Sequence[str]) -> tuple[str, ...]:
    """The requested bins as a tuple, or BadInput naming the first unknown or overlong one (cached)."""
    return _checked_bins(names if isinstance(names, tuple) else tuple(names))


def _bin_name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"bin name must be a string, got {type(name).__name__}"
    size = len(name.encode("utf-8"))
    if size > MAX_BIN_BYTES:
        return f"bin name is {size} bytes, over the {MAX_BIN_BYTES}-byte limit"
    if name not in BINS_BY_NAME:
        return "unknown bin (not in schemas.features.BINS)"
    return None


def _as_int(value: Any) -> int:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, Integral)):
        raise ValueError(f"expected an int, got {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"int {value} does not fit in 64 bits")
    return int(value)


def _as_float(value: Any) -> float:
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, Real)):
        raise ValueError(f"expected a float, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"must be finite, got {value}")
    return float(value)


def _as_list(value: Any) -> list[int | float]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(f"list has {len(value)} items, over the {MAX_LIST_ITEMS}-item limit")
    all_ints = bool(value) and all(type(item) is int for item in value)  # the usual case, without a Python loop
    if all_ints and min(value) >= INT64_MIN and max(value) <= INT64_MAX:
        return list(value)
    out: list[int | float] = []
    for index, item in enumerate(value):
        try:
            out.append(_as_int(item) if isinstance(item, Integral) else _as_float(item))
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
    return out


def _as_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise ValueError(f"expected bytes, got {type(value).__name__}")
    if len(value) > MAX_BYTES:
        raise ValueError(f"{len(value)} bytes, over the {MAX_BYTES}-byte limit")
    return bytes(value)


_CONVERT = {"int": _as_int, "float": _as_float, "list": _as_list, "bytes": _as_bytes}
_DTYPES = {name: spec.dtype for name, spec in BINS_BY_NAME.items()}


def check_entity_id(entity_id: Any) -> str:
    """The id itself, or BadInput: a 1-64 byte string of `[A-Za-z0-9_.:-]` (docs/spec.md §2 driver_id)."""
    if not isinstance(entity_id, str) or not entity_id:
        raise BadInput(f"entity id must be a non-empty string, got {entity_id!r}")
    if len(entity_id.encode("utf-8")) > MAX_ID_BYTES:
        raise BadInput(f"entity id {entity_id[:20]!r}...: longer than {MAX_ID_BYTES} bytes")
    if not ID_PATTERN.fullmatch(entity_id):
        raise BadInput(f"entity id {entity_id!r}: characters outside {ID_PATTERN.pattern}")
    return entity_id


def check_record(entity_id: Any, bins: Any, stamp_ms: int) -> Prepared:
    """A normalised copy of one record stamped with `_updated_ms`, or BadInput naming entity, bin and problem."""
    check_entity_id(entity_id)
    if not isinstance(bins, Mapping):
        raise BadInput(f"driver {entity_id!r}: bins must be a mapping, got {type(bins).__name__}")
    out: dict[str, Any] = {}
    for name, value in bins.items():
        dtype = _DTYPES.get(name)
        if dtype is None:
            raise BadInput(f"driver {entity_id!r}: bin {name!r}: {_bin_name_problem(name)}")
        if value is None or name == STAMP_BIN:
            continue
        kind = type(value)  # the usual cases first, without a call: an int or a finite float of its own type
        if (kind is int and dtype == "int" and INT64_MIN <= value <= INT64_MAX
                or kind is float and dtype == "float" and value - value == 0.0):
            out[name] = value
        else:
            try:
                out[name] = _CONVERT[dtype](value)
            except ValueError as exc:
                raise BadInput(f"driver {entity_id!r}: bin {name!r}: {exc}") from None
    for name in VERSION_BINS:
        if out.get(name, -1) < 0:
            raise BadInput(f"driver {entity_id!r}: bin {name!r}: required, must be >= 0")
    out[STAMP_BIN] = stamp_ms
    return entity_id, out


def prepare(records: Iterable[Record], stamp_ms: int) -> tuple[list[Prepared], int]:
    """Validate a whole batch before anything is written; keep the newest record per entity.

    Returns the records to write and how many duplicates (same entity, not newer) were dropped.
    """
    newest: dict[str, dict[str, Any]] = {}
    total = 0
    for entity_id, bins in records:
        total += 1
        entity_id, checked = check_record(entity_id, bins, stamp_ms)
        held = newest.get(entity_id)
        if held is None or version(checked) > version(held):
            newest[entity_id] = checked
    return list(newest.items()), total - len(newest)


def prepare_updates(updates: Iterable[Update], stamp_ms: int) -> list[tuple[str, dict[str, Any], Current]]:
    """Validate a whole batch of compare-and-set writes before anything is written (`check_record`); an id given
    twice, or a record read that is not a `Current`, is BadInput."""
    prepared, seen = [], set()
    for entity_id, bins, current in updates:
        entity_id, checked = check_record(entity_id, bins, stamp_ms)
        if entity_id in seen:
            raise BadInput(f"driver {entity_id!r}: given twice in one compare-and-set batch")
        if not isinstance(current, Current) or type(current.generation) is not int or current.generation < 0:
            raise BadInput(f"driver {entity_id!r}: the record read must be a Current with a generation >= 0, "
                           f"got {current!r}")
        seen.add(entity_id)
        prepared.append((entity_id, checked, current))
    return prepared


def check_metadata_set(set_name: str) -> str:
    """The set name itself, or BadInput when it is not a metadata set."""
    if set_name not in METADATA_SETS:
        raise BadInput(f"metadata set {set_name!r} is not one of {', '.join(METADATA_SETS)}")
    return set_name


def check_metadata_key(set_name: str, key: Any) -> str:
    """The key itself, or BadInput for an unknown set or an empty or non-string key."""
    check_metadata_set(set_name)
    if not isinstance(key, str) or not key:
        raise BadInput(f"{set_name}: key must be a non-empty string, got {key!r}")
    return key


def metadata_json(set_name: str, key: str, record: Mapping[str, Any]) -> str:
    """The record as JSON text, or BadInput for a bad set or key or a value JSON cannot carry."""
    check_metadata_key(set_name, key)
    try:
        return json.dumps(dict(record), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{set_name} {key!r}: not JSON-serialisable: {exc}") from exc
