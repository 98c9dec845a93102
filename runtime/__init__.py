"""The base every stage stands on: settings, the local Kafka broker and topics, the Spark session, child processes."""
