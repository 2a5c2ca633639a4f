"""Parquet shards, their statistics and the inspection reports."""
