#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, ASan and UBSan, and runs each on its seed
# corpus for a fixed time. Fails on the first crash, leak, sanitizer report or timeout.
#
#   tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default 30 s, every target)
# New inputs go to build-fuzz/corpus/<target>, not to the committed seeds in fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(idx safetensors checkpoint metrics config)

mkdir -p build-fuzz
log=build-fuzz/build.log
CXX=clang++ cmake -S fuzz -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$log"
cmake --build build-fuzz -j 2 >> "$log" 2>&1 || { tail -30 "$log"; exit 1; }
for target in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$target" "build-fuzz/artifacts/$target"
  log=build-fuzz/$target.log
  # -timeout: one input taking 10 s counts as a hang. -rss_limit_mb: the readers bound their
  # allocations by the input's size, so 2 GB is a failure.
  if ! "build-fuzz/fuzz_$target" "build-fuzz/corpus/$target" "fuzz/corpus/$target" \
       -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="build-fuzz/artifacts/$target/" > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target failed; the input is in build-fuzz/artifacts/$target" >&2
    exit 1
  fi
  echo "fuzz: $target: $(grep '^Done' "$log")"
done
