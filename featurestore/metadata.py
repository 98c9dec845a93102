"""Feature-store metadata as in the Aerospike tutorial: feature groups, features and datasets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from featurestore.base import OnlineStore
from schemas.features import BINS, ENTITY, GROUPS, RECORD_SET


class MetadataRecord:
    """save / load / query for a dataclass kept in one metadata set, keyed by one of its fields."""

    set_name: ClassVar[str]
    key_field: ClassVar[str]

    @property
    def key(self) -> str:
        """The record's key in its set."""
        return getattr(self, self.key_field)

    def save(self, store: OnlineStore) -> None:
        """Create or replace this record."""
        store.put_metadata(self.set_name, self.key, asdict(self))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Self:
        """An instance from a stored document; unknown keys are ignored."""
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc})

    @classmethod
    def load(cls, store: OnlineStore, key: str) -> Self | None:
        """The record stored under `key`, or None."""
        doc = store.get_metadata(cls.set_name, key)
        return None if doc is None else cls.from_dict(doc)

    @classmethod
    def query(cls, store: OnlineStore, *, tag: str | None = None, **equals: Any) -> list[Self]:
        """Records carrying `tag` whose fields (or, for other names, `attrs` entries) equal `equals`, by key."""
        names = {f.name for f in fields(cls)}
        found = []
        for doc in store.scan_metadata(cls.set_name):
            if tag is not None and tag not in doc.get("tags", ()):
                continue
            attrs = doc.get("attrs") or {}
            if all((doc.get(k) if k in names else attrs.get(k)) == v for k, v in equals.items()):
                found.append(cls.from_dict(doc))
        return sorted(found, key=lambda record: record.key)


@dataclass
class FeatureGroup(MetadataRecord):
    """A family of bins sharing a prefix (set `fg-metadata`, key name)."""

    set_name: ClassVar[str] = "fg-metadata"
    key_field: ClassVar[str] = "name"

    name: str
    description: str = ""
    source: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


@dataclass
class Feature(MetadataRecord):
    """One feature of a group (set `feature-metadata`, key fid = `<group>_<name>`)."""

    set_name: ClassVar[str] = "feature-metadata"
    key_field: ClassVar[str] = "fid"

    fgname: str
    name: str
    type: str
    description: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    fid: str = ""

    def __post_init__(self) -> None:
        self.fid = self.fid or f"{self.fgname}_{self.name}"


@dataclass
class Dataset(MetadataRecord):
    """A materialised training set: its features, predicate and location (set `dataset-metadata`, key name)."""

    set_name: ClassVar[str] = "dataset-metadata"
    key_field: ClassVar[str] = "name"

    name: str
    description: str = ""
    features: list[str] = field(default_factory=list)
    predicate: str = ""
    location: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def register_feature_metadata(store: OnlineStore) -> tuple[int, int]:
    """Save the registry's groups and bins as metadata (idempotent); returns (groups, features) saved."""
    for group in GROUPS:
        attrs = {"entity": ENTITY, "set": RECORD_SET, "prefix": group.prefix}
        FeatureGroup(group.name, group.description, source="trip-events", attrs=attrs).save(store)
    for spec in BINS:
        tags = ["internal"] if spec.internal else ["served"] if spec.group != "meta" else ["meta"]
        Feature(spec.group, spec.name, spec.dtype, spec.description, attrs={"entity": ENTITY}, tags=tags).save(store)
    return len(GROUPS), len(BINS)
