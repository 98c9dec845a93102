"""The Faust scorer: rank dispatch candidates by expected cost from fresh features and the active model."""
