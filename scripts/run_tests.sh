#!/usr/bin/env bash
# The whole test suite in two processes side by side: the SLURM tests (tests/integration/launch,
# mostly waiting on the scheduler, one local cluster between them) and everything else. On a
# 2-core machine that halves the wall time; the preemption tests come last in their run, once the
# other run is over. Both outputs are printed, the SLURM run's after the other; the exit status is
# non-zero when either run failed.
#   scripts/run_tests.sh PYTHON [pytest options]
set -uo pipefail
PY="$1"; shift
log=$(mktemp -t prismlab-slurm-tests.XXXXXX)
trap 'rm -f "$log"' EXIT
"$PY" -m pytest -q "$@" tests/integration/launch >"$log" 2>&1 &
slurm=$!
"$PY" -m pytest -q "$@" tests --ignore=tests/integration/launch
rest=$?
wait "$slurm"
cluster=$?
echo "==> the SLURM tests (tests/integration/launch), run beside the others:"
cat "$log"
exit $(( rest != 0 || cluster != 0 ))
