#!/usr/bin/env bash
# The main job: installs the dependencies, builds Kiln, and trains LeNet-5 on Fashion-MNIST.
# Extra arguments go to `kiln train` (e.g. --epochs 3 --threads 2).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
tools/build.sh
build/kiln train --model lenet5 --epochs 15 --lr 0.01 --momentum 0.9 \
  --checkpoint build/lenet5.safetensors --overwrite "$@"
