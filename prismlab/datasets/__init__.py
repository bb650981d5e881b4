"""Datasets, by the direction the bytes flow: `format/` is the shard format both sides share
(manifests, sample members, tar reading, where a shard is); `write/` turns image sets into shards
(sources, writer, synthetic clocks, indexing shards other tools wrote, verifying); `read/` streams
shards back into batches (the data settings, the epoch plan, the loader, transforms, GPU decode).
The read side never imports the write side."""
