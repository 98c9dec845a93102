"""The online store contract (SPEC §5): every backend implements `OnlineStore` and passes one test suite."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

Record = tuple[str, Mapping[str, Any]]
"""(entity id, bins): one driver record to write; it must carry `_event_ms` and `_n_events`."""


class StoreError(Exception):
    """Any failure of the online store; callers fall back on it."""


class StoreTimeout(StoreError):
    """The store did not answer within its deadline."""


class StoreUnavailable(StoreError):
    """The store cannot be reached."""


class BadInput(StoreError, ValueError):
    """A write or read names an unknown bin, a wrong type or an oversize value."""


class FeatureRow(NamedTuple):
    """What a batch read returns for one entity id (a named tuple: 50 per request are built on the hot path)."""

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
        ages = ages_ms([self])
        return ages[0] if ages else None


def ages_ms(rows: Sequence[FeatureRow]) -> list[int]:
    """`age_ms` of each row that has one, in one pass (the scorer's per-candidate path)."""
    return [row.now_ms - int(event_ms) for row in rows
            if row.bins and (event_ms := row.bins.get("_event_ms")) is not None]


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
    def read(self, entity_ids: Sequence[str], bins: Sequence[str]) -> list[FeatureRow]:
        """One batch read of only `bins` for every id, in the order given."""

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
