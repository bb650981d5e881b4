"""The shard format both directions share: manifests, sample members, tar reading by headers, and
where a shard is (paths, URLs, the node-local cache)."""
