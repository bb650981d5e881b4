#!/usr/bin/env bash
# Download, here, the wheels an offline GPU node lacks, for scripts/gpu_check.sh to install there.
#
#   scripts/gpu_wheels.sh [DIR]      (default .whl, git-ignored; `make gpu-wheels`)
#
# The node we target (as HPC GPU nodes often are): no network, a site Python 3.12 with torch,
# torchvision, accelerate, timm, nvcc and ninja, and none of our other dependencies. So: our
# direct dependencies beyond those, at the versions requirements.txt pins, and their dependencies
# for CPython 3.12 on manylinux x86_64, minus what torch, torchvision and accelerate already bring
# (numpy, pillow, pyyaml, requests, ...). Prints the size of tree + wheels, which must stay under
# the 64 MiB a device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PYTHON:-python3}
PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}
# Ours, pinned as in requirements.txt.
PACKAGES=$(grep -E '^(webdataset|wandb|submitit|matplotlib|timm|tifffile|simplejpeg)==' requirements.txt)
# The node's own torch and torchvision (timm pulls them in, with CUDA wheels of 4 GB), and what they,
# accelerate and huggingface_hub bring on any node that has them.
PROVIDED='^(torch|torchvision|triton|nvidia_[a-z0-9_]+|cuda_[a-z0-9_]+|numpy|pillow|pyyaml|requests|urllib3|certifi|idna|charset_normalizer|packaging|typing_extensions|tqdm|filelock|fsspec|jinja2|markupsafe|sympy|mpmath|networkx|setuptools|psutil)-'

rm -rf "$DIR.tmp" && mkdir -p "$DIR.tmp"
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DIR.tmp" $PACKAGES
find "$DIR.tmp" -name '*.whl' -printf '%f\n' | while read -r wheel; do
  name=$(echo "${wheel%%-*}" | tr 'A-Z-' 'a-z_')
  if [[ "$name-" =~ $PROVIDED ]]; then rm "$DIR.tmp/$wheel"; fi
done
rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
tree_bytes=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
wheel_bytes=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
total=$((tree_bytes + wheel_bytes))
echo "gpu-wheels: $(ls "$DIR"/*.whl | wc -l) wheels in $DIR ($((wheel_bytes / 1048576)) MiB) + source tree" \
     "($((tree_bytes / 1048576)) MiB) = $((total / 1048576)) MiB of the 64 MiB a device call carries"
if [ "$total" -ge $((64 * 1048576)) ]; then
  echo "gpu-wheels: error: over 64 MiB; drop a wheel the node already has" >&2
  exit 1
fi
