"""What surrounds a run: its dir and records, the checks before it starts, its metric log, per-rank
system metrics, the hang watchdog, profiling and plots."""
