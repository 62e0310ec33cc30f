#!/usr/bin/env bash
# Installs Kiln from a build directory into a temporary prefix, builds examples/fine_tune against
# that package alone, and runs it on a checkpoint the installed kiln trains. Fails when the
# install, the package, the example or its run-time dependencies (no Halide or LLVM) break.
#
#   tools/check_install.sh BUILD_DIR [KEEP_DIR]
# KEEP_DIR, when given, keeps the prefix, the example's build and the checkpoints there.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${1:?usage: tools/check_install.sh BUILD_DIR [KEEP_DIR]}
if [[ $# -ge 2 ]]; then
  work=$2
  rm -rf "$work" && mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
fail() { echo "check_install: $*" >&2; exit 1; }

cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log"
cmake -S "$source_dir/examples/fine_tune" -B "$work/app" -DCMAKE_PREFIX_PATH="$work/prefix" \
  > "$work/configure.log" || { cat "$work/configure.log"; fail "configuring the example failed"; }
cmake --build "$work/app" -j 2 > "$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log"; fail "building the example failed"; }
app=$work/app/fine_tune

# The application compiles without Halide's headers and loads no Halide or LLVM library.
flags=$(cat "$work/app/CMakeFiles/fine_tune.dir/flags.make")
if grep -qi halide <<< "$flags"; then
  fail "the example compiles with Halide include paths: $flags"
fi
if ldd "$app" | grep -Ei 'halide|llvm'; then fail "the example loads Halide or LLVM (above)"; fi

data=${KILN_DATA:-/usr/share/datasets/fashion-mnist}
"$work/prefix/bin/kiln" train --model lenet5 --epochs 3 --train-limit 10000 --test-limit 1000 \
  --lr 0.05 --threads 2 --data "$data" --checkpoint "$work/lenet5.safetensors" > "$work/train.log"
"$app" --checkpoint "$work/lenet5.safetensors" --output "$work/tuned.safetensors" --data "$data" \
  --epochs 5 | tee "$work/fine_tune.log"
[[ -s $work/tuned.safetensors ]] || fail "the example saved no checkpoint"
# Fine-tuning fits the new images better than the checkpoint did.
before=$(awk '/^loaded/ {print $(NF-10)}' "$work/fine_tune.log")
after=$(awk '/^fine-tuned/ {print $3}' "$work/fine_tune.log")
awk -v b="$before" -v a="$after" 'BEGIN {exit !(a > b)}' \
  || fail "accuracy on the new images went from '$before' to '$after', not up"
# The installed kiln reads the application's checkpoint.
"$work/prefix/bin/kiln" eval --model lenet5 --checkpoint "$work/tuned.safetensors" \
  --test-limit 1000 --data "$data" || fail "kiln eval could not read the example's checkpoint"

# A missing checkpoint is an error naming the file, with nothing written.
if "$app" --checkpoint "$work/missing.safetensors" --output "$work/never.safetensors" \
     2> "$work/error.log"; then
  fail "a missing checkpoint did not fail"
fi
grep -q missing.safetensors "$work/error.log" || fail "unexpected error: $(cat "$work/error.log")"
[[ ! -e $work/never.safetensors ]] || fail "a failed run wrote its output"

# With a KILN_TARGET below the package's, the model, the optimizers and the Halide runtime are
# compiled for it, so the binary has no AVX-512 instruction (zmm registers) and runs on AVX2.
cmake -S "$source_dir/examples/fine_tune" -B "$work/app_avx2" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DKILN_TARGET=x86-64-linux-avx2-fma > "$work/configure_avx2.log"
cmake --build "$work/app_avx2" -j 2 > "$work/build_avx2.log" 2>&1 \
  || { tail -40 "$work/build_avx2.log"; fail "building the example for AVX2 failed"; }
if objdump -d "$work/app_avx2/fine_tune" | grep -q zmm; then
  fail "the example built for x86-64-linux-avx2-fma holds AVX-512 instructions"
fi
"$work/app_avx2/fine_tune" --checkpoint "$work/lenet5.safetensors" --data "$data" --epochs 1 \
  --output "$work/tuned_avx2.safetensors" > /dev/null || fail "the AVX2 build failed to run"

echo "check_install: example $(stat -c %s "$app") bytes; run-time libraries:"
ldd "$app" | awk '{print "  " $1}'
