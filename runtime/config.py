"""Settings read from `TRIPSCORE_*` environment variables; command-line flags override them."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

ENV_PREFIX = "TRIPSCORE_"
SECRET_FIELDS = frozenset({"aerospike_password", "kafka_sasl_password", "kafka_ssl_certfile", "kafka_ssl_keyfile"})
"""Masked whenever settings are shown: passwords, and the paths of client keys and certificates."""


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
T = TypeVar("T")


class SettingsError(ValueError):
    """A `TRIPSCORE_*` variable whose value cannot be read or is out of range; the message names the variable."""


class Bound(NamedTuple):
    """The range of a numeric setting: from `low` (excluded when `open_low`), up to `high` when given."""

    low: float
    high: float | None = None
    open_low: bool = False


PORT = Bound(0, 65535)
POSITIVE = Bound(0, open_low=True)
BOUNDS: dict[str, Bound] = {
    "kafka_partitions": Bound(1), "store_ttl_s": Bound(0), "aerospike_timeout_ms": Bound(1),
    "aerospike_retries": Bound(0), "redispatch_penalty_min": Bound(0), "max_feature_age_s": Bound(0),
    "store_deadline_ms": POSITIVE, "scorer_concurrency": Bound(1), "scorer_batch_max": Bound(1),
    "scorer_batch_wait_ms": Bound(0), "scorer_workers": Bound(1), "scorer_read_threads": Bound(1),
    "scorer_web_port": PORT, "scorer_commit_interval_s": POSITIVE, "scorer_session_timeout_s": POSITIVE,
    "model_poll_s": POSITIVE, "stream_trigger_ms": Bound(0), "stream_max_offsets": Bound(1),
    "stream_lateness_s": Bound(0), "stream_partitions": Bound(1), "stream_metrics_port": PORT,
    "stream_store_giveup_s": POSITIVE,
}
"""Every numeric setting's range: a value outside it stops the command, naming the setting."""


def out_of_range(name: str, value: float | None) -> str | None:
    """What is wrong with `value` for setting `name` ("must be at least 1, got 0"), or None when it is in range
    (or None: unset)."""
    if value is None:
        return None
    bound = BOUNDS[name]
    if bound.open_low and not value > bound.low:
        return f"must be above {bound.low:g}, got {value}"
    if value < bound.low:
        return f"must be at least {bound.low:g}, got {value}"
    if bound.high is not None and value > bound.high:
        return f"must be at most {bound.high:g}, got {value}"
    return None


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def _parsed(name: str, default: str, parse: Callable[[str], T], kind: str) -> T:
    """The variable's value read by `parse`, or `SettingsError` naming the variable and what it should be."""
    raw = _env(name, default)
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not {kind}") from None


def _finite(text: str) -> float:
    """A finite float: NaN and the infinities are no setting's value."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _boolean(text: str) -> bool:
    """True or False from one of the words of `TRUE_WORDS` / `FALSE_WORDS`, in any case."""
    word = text.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise ValueError(text)
    return word in TRUE_WORDS


def _int(name: str, default: str) -> int:
    return _parsed(name, default, int, "an integer")


def _float(name: str, default: str) -> float:
    return _parsed(name, default, _finite, "a finite number")


def _flag(name: str) -> bool:
    return _parsed(name, "", _boolean, "a boolean (1/0, true/false, yes/no, on/off)")


@dataclass(frozen=True)
class Settings:
    """Every tunable of tripscore; one instance per process, built by `load_settings()`."""

    home: Path = field(default_factory=lambda: Path(_env("home", ".local")))
    kafka_bootstrap: str = field(default_factory=lambda: _env("kafka_bootstrap", "127.0.0.1:9092"))
    kafka_security_protocol: str = field(default_factory=lambda: _env("kafka_security_protocol", "PLAINTEXT"))
    kafka_sasl_mechanism: str = field(default_factory=lambda: _env("kafka_sasl_mechanism", "SCRAM-SHA-512"))
    kafka_sasl_username: str = field(default_factory=lambda: _env("kafka_sasl_username", ""))
    kafka_sasl_password: str = field(default_factory=lambda: _env("kafka_sasl_password", ""))
    kafka_ssl_cafile: str = field(default_factory=lambda: _env("kafka_ssl_cafile", ""))
    kafka_ssl_certfile: str = field(default_factory=lambda: _env("kafka_ssl_certfile", ""))
    kafka_ssl_keyfile: str = field(default_factory=lambda: _env("kafka_ssl_keyfile", ""))
    kafka_partitions: int = field(default_factory=lambda: _int("kafka_partitions", "4"))
    topic_trip_events: str = field(default_factory=lambda: _env("topic_trip_events", "trip-events"))
    topic_trip_events_dlq: str = field(default_factory=lambda: _env("topic_trip_events_dlq", "trip-events-dlq"))
    topic_score_requests: str = field(default_factory=lambda: _env("topic_score_requests", "score-requests"))
    topic_risk_scores: str = field(default_factory=lambda: _env("topic_risk_scores", "risk-scores"))
    store: str = field(default_factory=lambda: _env("store", "sqlite"))
    sqlite_path: Path | None = field(
        default_factory=lambda: Path(p) if (p := _env("sqlite_path", "")) else None
    )
    store_ttl_s: int = field(default_factory=lambda: _int("store_ttl_s", "0"))
    aerospike_hosts: str = field(default_factory=lambda: _env("aerospike_hosts", "127.0.0.1:3000"))
    aerospike_namespace: str = field(default_factory=lambda: _env("aerospike_namespace", "features"))
    aerospike_set_prefix: str = field(default_factory=lambda: _env("aerospike_set_prefix", ""))
    aerospike_user: str = field(default_factory=lambda: _env("aerospike_user", ""))
    aerospike_password: str = field(default_factory=lambda: _env("aerospike_password", ""))
    aerospike_tls_name: str = field(default_factory=lambda: _env("aerospike_tls_name", ""))
    aerospike_tls_cafile: str = field(default_factory=lambda: _env("aerospike_tls_cafile", ""))
    aerospike_timeout_ms: int = field(default_factory=lambda: _int("aerospike_timeout_ms", "50"))
    aerospike_retries: int = field(default_factory=lambda: _int("aerospike_retries", "2"))
    spark_master: str = field(default_factory=lambda: _env("spark_master", "local[*]"))
    models_dir: Path = field(default_factory=lambda: Path(_env("models_dir", "models")))
    datasets_dir: Path = field(default_factory=lambda: Path(_env("datasets_dir", "datasets")))
    redispatch_penalty_min: float = field(default_factory=lambda: _float("redispatch_penalty_min", "5.0"))
    max_feature_age_s: float = field(default_factory=lambda: _float("max_feature_age_s", "86400"))
    store_deadline_ms: float = field(default_factory=lambda: _float("store_deadline_ms", "20"))
    topic_score_dlq: str = field(default_factory=lambda: _env("topic_score_dlq", "trip-events-dlq"))
    scorer_app_id: str = field(default_factory=lambda: _env("scorer_app_id", "tripscore-scorer"))
    scorer_concurrency: int = field(default_factory=lambda: _int("scorer_concurrency", "1"))
    scorer_batch_max: int = field(default_factory=lambda: _int("scorer_batch_max", "16"))
    scorer_batch_wait_ms: float = field(default_factory=lambda: _float("scorer_batch_wait_ms", "2"))
    scorer_workers: int = field(default_factory=lambda: _int("scorer_workers", "1"))
    scorer_read_mode: str = field(default_factory=lambda: _env("scorer_read_mode", "auto"))
    scorer_read_threads: int = field(default_factory=lambda: _int("scorer_read_threads", "4"))
    web_bind: str = field(default_factory=lambda: _env("web_bind", "127.0.0.1"))
    scorer_web_port: int = field(default_factory=lambda: _int("scorer_web_port", "6066"))
    scorer_commit_interval_s: float = field(default_factory=lambda: _float("scorer_commit_interval_s", "1.0"))
    scorer_session_timeout_s: float = field(default_factory=lambda: _float("scorer_session_timeout_s", "10"))
    scorer_instance_id: str = field(default_factory=lambda: _env("scorer_instance_id", ""))
    model_poll_s: float = field(default_factory=lambda: _float("model_poll_s", "1.0"))
    stream_checkpoint: str = field(default_factory=lambda: _env("stream_checkpoint", ""))
    stream_starting_offsets: str = field(default_factory=lambda: _env("stream_starting_offsets", "earliest"))
    stream_trigger_ms: int = field(default_factory=lambda: _int("stream_trigger_ms", "500"))
    stream_max_offsets: int = field(default_factory=lambda: _int("stream_max_offsets", "200000"))
    stream_lateness_s: float = field(default_factory=lambda: _float("stream_lateness_s", "10"))
    stream_partitions: int = field(default_factory=lambda: _int("stream_partitions", "2"))
    stream_metrics_port: int = field(default_factory=lambda: _int("stream_metrics_port", "9108"))
    stream_store_giveup_s: float = field(default_factory=lambda: _float("stream_store_giveup_s", "600"))
    verbose: bool = field(default_factory=lambda: _flag("verbose"))

    def __post_init__(self) -> None:
        for name in BOUNDS:
            if (problem := out_of_range(name, getattr(self, name))) is not None:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} {problem}")

    @property
    def sqlite_file(self) -> Path:
        """The SQLite store file: `TRIPSCORE_SQLITE_PATH`, else `<home>/features.db`."""
        return self.sqlite_path or self.home / "features.db"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced; `None` values are ignored (unset flags)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to log: secrets are masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in SECRET_FIELDS and value else str(value)
        return out

    def __repr__(self) -> str:
        return f"Settings({self.redacted()})"


RETIRED = {
    "stream_watermark_s": "lateness is judged per driver now: set TRIPSCORE_STREAM_LATENESS_S",
    "stream_state_buckets": "the store records are the drivers' state now, Spark keeps none",
    "stream_state_idle_s": "the store records are the drivers' state now, Spark keeps none",
    "stream_write_batch": "each partition writes its records in one batch now",
}
"""Settings of earlier versions that no longer exist, and what replaced them."""


def retired_settings() -> list[str]:
    """One line for each retired `TRIPSCORE_*` variable (`RETIRED`) set in the environment."""
    return [f"{ENV_PREFIX}{name.upper()} is no longer read: {why}" for name, why in RETIRED.items()
            if ENV_PREFIX + name.upper() in os.environ]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with non-None overrides (usually parsed flags) applied."""
    return Settings().with_overrides(**overrides)
