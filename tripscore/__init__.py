"""tripscore: streaming driver features and decline-risk scoring for ride-hailing dispatch."""

__version__ = "0.1.0"
