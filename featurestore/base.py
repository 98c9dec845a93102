"""The online store contract (docs/spec.md §5): every backend implements `OnlineStore` and passes one test suite."""

from __future__ import annotations

import contextlib
import math
import reprlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from schemas.features import NOT_NUMERIC_BINS

Record = tuple[str, Mapping[str, Any]]
"""(entity id, bins): one driver record to write; it must carry `_event_ms` and `_n_events`."""
Update = tuple[str, Mapping[str, Any], "Current"]
"""(entity id, its whole new record, the record it replaces as `read_current` read it): one compare-and-set write."""


class StoreError(Exception):
    """Any failure of the online store; callers fall back on it."""


class StoreTimeout(StoreError):
    """The store did not answer within its deadline."""


class StoreUnavailable(StoreError):
    """The store cannot be reached."""


class BadInput(StoreError, ValueError):
    """A write or read names an unknown bin, a wrong type or an oversize value."""


class FeatureRow(NamedTuple):
    """What a batch read returns for one entity id (a named tuple: cheap to build by the thousand)."""

    entity_id: str
    bins: dict[str, Any] | None  # requested bins that are present; None when there is no record
    requested: tuple[str, ...]
    now_ms: int

    @property
    def found(self) -> bool:
        """Whether a record exists."""
        return self.bins is not None

    @property
    def statuses(self) -> dict[str, str]:
        """Per requested bin: `present` or `missing`."""
        bins = self.bins or {}
        return {name: "present" if bins.get(name) is not None else "missing" for name in self.requested}

    @property
    def age_ms(self) -> int | None:
        """Milliseconds from the record's latest event time to the read, when `_event_ms` was read."""
        event_ms = self.bins.get("_event_ms") if self.bins else None
        return None if event_ms is None else self.now_ms - int(event_ms)


class Current(NamedTuple):
    """A whole record as `read_current` returns it, with the generation a `compare_and_set` must match."""

    bins: dict[str, Any] | None  # every bin of the record; None when there is no record
    generation: int  # changes with every write of the record; 0 when there is none


NO_RECORD = Current(None, 0)


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


class FeatureMatrix(NamedTuple):
    """A batch read as numbers (the scorer's path): row i holds the record of the i-th id."""

    values: np.ndarray  # float64, one column per requested bin, NaN where absent or there is no record
    now_ms: int  # when the store read
    unreadable: tuple[int, ...]  # rows whose record holds a value that is not a finite number (all NaN here)

    def rows(self, start: int, end: int) -> FeatureMatrix:
        """Rows `start` to `end - 1`, as the read of just their ids."""
        return FeatureMatrix(self.values[start:end], self.now_ms,
                             tuple(i - start for i in self.unreadable if start <= i < end))


def check_numeric_bins(bins: Sequence[str]) -> None:
    """BadInput when a bin holds lists or bytes: a matrix holds numbers only."""
    if listed := [name for name in bins if name in NOT_NUMERIC_BINS]:
        raise BadInput(f"bins {listed} hold lists or bytes, not numbers: read them with read()")


_PLAIN_CELLS = frozenset({int, float, type(None)})  # what the stores return for numeric bins, present or absent
_NUMBER_TYPES = (int, float, np.integer, np.floating)


def is_number(value: Any) -> bool:
    """Whether a stored value is a number: an int or a float (numpy's too), not a bool, a string or a list."""
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool)


def stored_float(value: Any) -> float:
    """A stored numeric value as a float, NaN when absent (None or NaN); ValueError for anything the store never
    writes there: a string, a bool, a list (even of one number), an infinity."""
    if value is None:
        return math.nan
    if is_number(value):
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
        if number - number == 0.0 or number != number:  # finite, or NaN (absent)
            return number
    raise ValueError(f"{type(value).__name__} {reprlib.repr(value)} is not a finite number")


def stored_int(value: Any) -> int:
    """A stored int bin's value; ValueError for anything else (a float, a string, a bool, a list)."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"{type(value).__name__} {reprlib.repr(value)} is not an int")


def record_floats(bins: Mapping[str, Any], names: Sequence[str]) -> list[float]:
    """Bins `names` of one record as floats, NaN where absent; BadInput naming the first that `stored_float`
    refuses."""
    values = [bins.get(name) for name in names]
    if _PLAIN_CELLS.issuperset(map(type, values)):  # the usual case, in one pass
        with contextlib.suppress(OverflowError):  # an int beyond float range: named below
            numbers = [math.nan if value is None else float(value) for value in values]
            if not any(map(math.isinf, numbers)):
                return numbers
    out = []
    for name, value in zip(names, values, strict=True):
        try:
            out.append(stored_float(value))
        except ValueError as exc:
            raise BadInput(f"bin {name!r}: {exc}") from None
    return out


def feature_matrix(rows: Sequence[Sequence[Any]], width: int, read_ms: int) -> FeatureMatrix:
    """`rows` of bin values (None where absent) as a `FeatureMatrix`; a row with a value that `stored_float`
    refuses is `unreadable`."""
    if _PLAIN_CELLS.issuperset(map(type, chain.from_iterable(rows))):  # the usual case, in C
        with contextlib.suppress(OverflowError):  # an int beyond float range: its row is found below
            values = np.array(rows, dtype=np.float64).reshape(len(rows), width)
            if not np.isinf(values).any():
                return FeatureMatrix(values, read_ms, ())
    values, unreadable = np.full((len(rows), width), np.nan), []
    for i, row in enumerate(rows):
        try:
            values[i] = [stored_float(value) for value in row]
        except ValueError:
            unreadable.append(i)
    return FeatureMatrix(values, read_ms, tuple(unreadable))


def records_matrix(records: Sequence[Mapping[str, Any] | None], bins: Sequence[str], read_ms: int) -> FeatureMatrix:
    """Records as read (bins dicts; None for no record) as a `FeatureMatrix` of `bins`."""
    absent = [None] * len(bins)
    rows = [absent if record is None else [record.get(name) for name in bins] for record in records]
    return feature_matrix(rows, len(bins), read_ms)


@dataclass(frozen=True)
class WriteResult:
    """Outcome of a bulk write: records applied, and records skipped because the store held newer state."""

    written: int
    skipped: int


@dataclass(frozen=True)
class StoreInfo:
    """A summary for `tripscore store info`."""

    backend: str
    location: str
    records: int
    newest_event_ms: int | None
    oldest_event_ms: int | None
    newest_update_ms: int | None
    metadata_counts: dict[str, int]


class OnlineStore(ABC):
    """Driver feature records keyed by entity id, newer-wins on (`_event_ms`, `_n_events`), plus metadata."""

    backend: str = ""

    @abstractmethod
    def write(self, records: Iterable[Record]) -> WriteResult:
        """Replace each record whose stored version is older; stamp `_updated_ms`; atomic per record."""

    @abstractmethod
    def read_current(self, entity_ids: Sequence[str]) -> list[Current]:
        """One batch read of whole records with their generations, in the order given (a record's state holder)."""

    @abstractmethod
    def compare_and_set(self, updates: Sequence[Update]) -> list[str]:
        """Replace each record that is still as read (its generation unchanged; `NO_RECORD`: there is none) with its
        new one, stamped with `_updated_ms`, atomic per record; returns the ids whose record had moved on, for which
        nothing was written. The ids must be distinct. A backend may write only what differs from the record read."""

    @abstractmethod
    def read(self, entity_ids: Sequence[str], bins: Sequence[str]) -> list[FeatureRow]:
        """One batch read of only `bins` for every id, in the order given."""

    def read_matrix(self, entity_ids: Sequence[str], bins: Sequence[str]) -> FeatureMatrix:
        """`read` of numeric `bins` as one float64 matrix; backends may override it with a faster path."""
        check_numeric_bins(bins)
        rows = self.read(entity_ids, bins)
        return records_matrix([row.bins for row in rows], bins, rows[0].now_ms if rows else now_ms())

    @abstractmethod
    def delete(self, entity_ids: Sequence[str]) -> int:
        """Delete records; returns how many existed."""

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """A small dict with at least `ok` (bool) and `backend`."""

    @abstractmethod
    def info(self) -> StoreInfo:
        """Record count and freshness summary."""

    @abstractmethod
    def put_metadata(self, set_name: str, key: str, record: Mapping[str, Any]) -> None:
        """Save one metadata record (`fg-metadata`, `feature-metadata`, `dataset-metadata`)."""

    @abstractmethod
    def get_metadata(self, set_name: str, key: str) -> dict[str, Any] | None:
        """Load one metadata record, or None."""

    @abstractmethod
    def scan_metadata(self, set_name: str) -> list[dict[str, Any]]:
        """Every record of a metadata set."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
