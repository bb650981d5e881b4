"""prismlab: distributed training of vision models on SLURM clusters."""
