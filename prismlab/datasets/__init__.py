"""Datasets: synthetic image sources and their on-disk shard format."""
