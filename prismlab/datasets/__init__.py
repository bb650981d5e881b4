"""Datasets: image sources (folders, CIFAR, IDX, synthetic clocks), their shard format and writers,
and the streaming loader that reads shards back exactly across ranks and resumably mid-epoch."""
