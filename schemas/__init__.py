"""Contracts shared by every stage: Kafka messages (SPEC §2) and the feature registry (SPEC §3)."""
