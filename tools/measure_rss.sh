#!/usr/bin/env bash
# Trains with `kiln train` and prints the process's resident memory (VmRSS) when each epoch line
# appears, to check that memory stays flat over a long run.
#
#   tools/measure_rss.sh [KILN_TRAIN_FLAGS...]     (default: 20 epochs of LeNet-5, 2 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
flags=("$@")
[[ ${#flags[@]} -gt 0 ]] || flags=(--model lenet5 --epochs 20 --threads 2)
fifo=$(mktemp -u)
mkfifo "$fifo"
trap 'rm -f "$fifo"' EXIT
build/kiln train "${flags[@]}" > "$fifo" &
pid=$!
first=""
while IFS= read -r line; do
  if [[ $line == epoch* ]]; then
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    first=${first:-$rss}
    printf '%s  rss %d kB (%+d kB since epoch 1)\n' "${line%%  train*}" "$rss" $((rss - first))
  fi
done < "$fifo"
wait "$pid"
