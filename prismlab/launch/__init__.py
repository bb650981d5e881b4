"""Launching: the distributed environment under SLURM, preemption handling, submission."""
