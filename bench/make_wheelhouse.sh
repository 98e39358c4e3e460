#!/usr/bin/env bash
# Collect the wheels a GPU machine without network needs to run bench/gpu_fps.py: refseg_ros
# itself, sam2 (built here without its CUDA extension) and every pure dependency, but not
# torch, which the GPU machine has in its CUDA build already (the engine does not need
# torchvision). On the GPU machine:
#   pip install --no-index --no-deps DIR/*.whl && python bench/gpu_fps.py
set -euo pipefail
out=${1:?usage: make_wheelhouse.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
python -m pip wheel -q --no-deps -w "$out" "$root"
SAM2_BUILD_CUDA=0 python -m pip wheel -q --no-deps -w "$out" sam2==1.1.0
# Dependencies of both, minus torch/torchvision; numpy comes along for machines without it.
python -m pip wheel -q -w "$out" hydra-core iopath pillow tqdm pyyaml numpy
echo "wheels in $out:"
ls "$out"
