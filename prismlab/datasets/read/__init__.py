"""Shards into batches: the data settings (DataConfig), an epoch as a pure function of (seed,
epoch), the resumable loader, transforms, and nvJPEG decoding."""
