#!/usr/bin/env bash
# Prove every GPU path of prismlab in one short shot on a bare, offline GPU node.
#
#   scripts/gpu_check.sh [OUT_DIR]      (or GPU_CHECK_OUT; default gpu-check-out)
#
# The node we plan for has no network and its own Python (3.12) with torch, torchvision,
# accelerate, nvcc and ninja; the rest travels as wheels made here by `make gpu-wheels` (.whl/).
# Steps, each printing one PASS / FAIL / SKIP line:
#   wheels  install the carried wheels into a target dir, without network
#   build   copy the source to a scratch dir and build prismlab._C there against the node's torch
#           (TORCH_CUDA_ARCH_LIST=9.0 unless set)
#   then scripts/gpu_check.py: GPU tests, kernel benchmark, bf16 training, any-channel fused vs
#   reference, NCCL through the engine, FSDP2 in bf16 with async sharded checkpoints on NCCL;
#   every figure goes to OUT_DIR/gpu_check.json.
# Without a GPU (the dry run in `make test`) the wheel and build steps still run and every GPU
# step prints SKIP with its reason.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-${GPU_CHECK_OUT:-gpu-check-out}}" && cd "${1:-${GPU_CHECK_OUT:-gpu-check-out}}" && pwd)
PY=${PYTHON:-python3}
[[ $PY == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # the steps run in other dirs
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
WHEEL_PYTHON=${GPU_PYTHON_VERSION:-3.12}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/prismlab-gpu-check.XXXXXX")
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT  # GPU_CHECK_KEEP=1 keeps the scratch build
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export PYTHONUNBUFFERED=1
export PRISMLAB_REQUIRE_EXTENSION=1  # a missing prismlab._C fails the GPU tests instead of skipping them
: > "$OUT/steps.jsonl"

step() {  # step NAME STATUS SECONDS DETAIL: one line for people, one JSON record for gpu_check.py
  printf '%-4s %-10s (%3ss) %s\n' "$2" "$1" "$3" "$4"
  "$PY" -c 'import json, sys; n, s, t, d = sys.argv[1:]; print(json.dumps({"name": n, "status": s, "seconds": int(t), "detail": d}))' \
    "$1" "$2" "$3" "$4" >> "$OUT/steps.jsonl"
}

# 1. Wheels: into a target dir, no index, no dependency resolution (the set was resolved here).
start=$SECONDS
site="$WORK/site"
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  step wheels SKIP 0 "no wheels in $WHEELS (run \`make gpu-wheels\` where pip can reach PyPI)"
  site=""
elif "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
     --only-binary=:all: --python-version "$WHEEL_PYTHON" --ignore-requires-python --target "$site" "$WHEELS"/*.whl > "$OUT/wheels.log" 2>&1; then
  count=$(ls "$WHEELS"/*.whl | wc -l)
  if [ "$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" = "$WHEEL_PYTHON" ]; then
    step wheels PASS $((SECONDS - start)) "$count wheels installed into $site"
  else
    step wheels PASS $((SECONDS - start)) "$count wheels installed into $site (not used: they are for Python $WHEEL_PYTHON)"
    site=""
  fi
else
  step wheels FAIL $((SECONDS - start)) "pip install failed: $(tail -1 "$OUT/wheels.log")"
  site=""
fi

# 2. Build against the node's torch, in a copy of the source (never touching the checkout's build).
start=$SECONDS
src="$WORK/src"
mkdir -p "$src"
(cd "$REPO" && tar --exclude='__pycache__' --exclude='*.so' -cf - prismlab setup.py pyproject.toml tests benchmarks \
  configs scripts) | (cd "$src" && tar -xf -)
if (cd "$src" && timeout 600 "$PY" setup.py --quiet build_ext --inplace > "$OUT/build.log" 2>&1); then
  what=$(grep -o 'building prismlab._C with .*' "$OUT/build.log" | head -1)
  step build PASS $((SECONDS - start)) "${what#building }"
else
  step build FAIL $((SECONDS - start)) "setup.py build_ext failed: $(grep -m1 -iE 'error' "$OUT/build.log" || tail -1 "$OUT/build.log")"
fi

export PYTHONPATH="$src${site:+:$site}${PYTHONPATH:+:$PYTHONPATH}"
cd "$src" && "$PY" scripts/gpu_check.py --out "$OUT" --work "$WORK"
