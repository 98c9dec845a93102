"""Streaming feature updates: Kafka `trip-events` → Spark Structured Streaming → the online feature store."""
