"""The ML model registry: versioned models, ACTIVE pointer, portable export."""
