"""Settings read from `TRIPSCORE_*` environment variables; command-line flags override them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "TRIPSCORE_"
SECRET_FIELDS = frozenset({"aerospike_password", "kafka_sasl_password", "kafka_ssl_certfile", "kafka_ssl_keyfile"})
"""Masked whenever settings are shown: passwords, and the paths of client keys and certificates."""


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name.upper(), default)


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
    kafka_partitions: int = field(default_factory=lambda: int(_env("kafka_partitions", "4")))
    topic_trip_events: str = field(default_factory=lambda: _env("topic_trip_events", "trip-events"))
    topic_trip_events_dlq: str = field(default_factory=lambda: _env("topic_trip_events_dlq", "trip-events-dlq"))
    topic_score_requests: str = field(default_factory=lambda: _env("topic_score_requests", "score-requests"))
    topic_risk_scores: str = field(default_factory=lambda: _env("topic_risk_scores", "risk-scores"))
    store: str = field(default_factory=lambda: _env("store", "sqlite"))
    sqlite_path: Path | None = field(
        default_factory=lambda: Path(p) if (p := _env("sqlite_path", "")) else None
    )
    store_ttl_s: int = field(default_factory=lambda: int(_env("store_ttl_s", "0")))
    aerospike_hosts: str = field(default_factory=lambda: _env("aerospike_hosts", "127.0.0.1:3000"))
    aerospike_namespace: str = field(default_factory=lambda: _env("aerospike_namespace", "features"))
    aerospike_set_prefix: str = field(default_factory=lambda: _env("aerospike_set_prefix", ""))
    aerospike_user: str = field(default_factory=lambda: _env("aerospike_user", ""))
    aerospike_password: str = field(default_factory=lambda: _env("aerospike_password", ""))
    aerospike_tls_name: str = field(default_factory=lambda: _env("aerospike_tls_name", ""))
    aerospike_tls_cafile: str = field(default_factory=lambda: _env("aerospike_tls_cafile", ""))
    aerospike_timeout_ms: int = field(default_factory=lambda: int(_env("aerospike_timeout_ms", "50")))
    aerospike_retries: int = field(default_factory=lambda: int(_env("aerospike_retries", "2")))
    spark_master: str = field(default_factory=lambda: _env("spark_master", "local[*]"))
    models_dir: Path = field(default_factory=lambda: Path(_env("models_dir", "models")))
    datasets_dir: Path = field(default_factory=lambda: Path(_env("datasets_dir", "datasets")))
    redispatch_penalty_min: float = field(default_factory=lambda: float(_env("redispatch_penalty_min", "5.0")))
    max_feature_age_s: float = field(default_factory=lambda: float(_env("max_feature_age_s", "86400")))
    store_deadline_ms: float = field(default_factory=lambda: float(_env("store_deadline_ms", "20")))
    topic_score_dlq: str = field(default_factory=lambda: _env("topic_score_dlq", "trip-events-dlq"))
    scorer_app_id: str = field(default_factory=lambda: _env("scorer_app_id", "tripscore-scorer"))
    scorer_concurrency: int = field(default_factory=lambda: int(_env("scorer_concurrency", "1")))
    scorer_batch_max: int = field(default_factory=lambda: int(_env("scorer_batch_max", "16")))
    scorer_batch_wait_ms: float = field(default_factory=lambda: float(_env("scorer_batch_wait_ms", "2")))
    scorer_workers: int = field(default_factory=lambda: int(_env("scorer_workers", "1")))
    scorer_read_mode: str = field(default_factory=lambda: _env("scorer_read_mode", "auto"))
    scorer_read_threads: int = field(default_factory=lambda: int(_env("scorer_read_threads", "4")))
    web_bind: str = field(default_factory=lambda: _env("web_bind", "127.0.0.1"))
    scorer_web_port: int = field(default_factory=lambda: int(_env("scorer_web_port", "6066")))
    scorer_commit_interval_s: float = field(default_factory=lambda: float(_env("scorer_commit_interval_s", "1.0")))
    scorer_session_timeout_s: float = field(default_factory=lambda: float(_env("scorer_session_timeout_s", "10")))
    scorer_instance_id: str = field(default_factory=lambda: _env("scorer_instance_id", ""))
    model_poll_s: float = field(default_factory=lambda: float(_env("model_poll_s", "1.0")))
    stream_checkpoint: str = field(default_factory=lambda: _env("stream_checkpoint", ""))
    stream_starting_offsets: str = field(default_factory=lambda: _env("stream_starting_offsets", "earliest"))
    stream_trigger_ms: int = field(default_factory=lambda: int(_env("stream_trigger_ms", "1000")))
    stream_max_offsets: int = field(default_factory=lambda: int(_env("stream_max_offsets", "200000")))
    stream_watermark_s: float = field(default_factory=lambda: float(_env("stream_watermark_s", "10")))
    stream_partitions: int = field(default_factory=lambda: int(_env("stream_partitions", "2")))
    stream_state_buckets: int | None = field(  # None: the checkpoint's count, 64 for a new one
        default_factory=lambda: int(b) if (b := _env("stream_state_buckets", "")) else None)
    stream_state_idle_s: float = field(default_factory=lambda: float(_env("stream_state_idle_s", "86400")))
    stream_write_batch: int = field(default_factory=lambda: int(_env("stream_write_batch", "5000")))
    stream_metrics_port: int = field(default_factory=lambda: int(_env("stream_metrics_port", "9108")))
    stream_store_giveup_s: float = field(default_factory=lambda: float(_env("stream_store_giveup_s", "600")))
    verbose: bool = field(default_factory=lambda: _env("verbose", "") not in ("", "0", "false"))

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


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with non-None overrides (usually parsed flags) applied."""
    return Settings().with_overrides(**overrides)
