#!/usr/bin/env bash
# Configures and builds Kiln in build/ (Release). Models are regenerated only when their
# definition or the compiler changed, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$(nproc)"
