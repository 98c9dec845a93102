"""Batch stages: synthetic city, backfill, point-in-time datasets, training and retraining."""
