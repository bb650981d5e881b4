"""Image sets into shards: sources (folders, CIFAR pickles, IDX), the writer, synthetic clocks,
indexing shards other tools wrote, and verifying shards against their manifests."""
