"""The Accelerate training engine: config, loop, tasks, checkpoints, metrics, logging."""
