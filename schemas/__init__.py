"""Contracts shared by every stage: Kafka messages (docs/spec.md §2) and the feature registry (docs/spec.md §3)."""
