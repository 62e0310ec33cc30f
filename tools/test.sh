#!/usr/bin/env bash
# Runs the whole test suite through CTest, building first. Extra arguments go to ctest
# (e.g. -R training). Needs the packages of tools/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
