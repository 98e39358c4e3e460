#!/usr/bin/env bash
# Collect the wheels a GPU machine without network needs to run bench/gpu_fps.py:
# refseg_ros itself, sam2 (built here without its CUDA extension) and their pure-Python
# dependencies. torch with CUDA is expected on the GPU machine already.
set -euo pipefail
out=${1:?usage: make_wheelhouse.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
python -m pip wheel --no-deps -w "$out" "$root"
SAM2_BUILD_CUDA=0 python -m pip wheel --no-deps -w "$out" sam2==1.1.0
python -m pip wheel -w "$out" hydra-core omegaconf iopath antlr4-python3-runtime==4.9.3 portalocker tqdm pyyaml
echo "wheels in $out; on the GPU machine: pip install --no-index --find-links $out refseg_ros sam2"
