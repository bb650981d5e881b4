"""The training loop's parts: optimisers and schedules, lookahead, checkpoints, finetuning,
evaluation, tasks and their metrics."""
