#!/usr/bin/env bash
# Builds the runtime, the executables and the tests with AddressSanitizer and
# UndefinedBehaviorSanitizer in build-sanitize/ and runs the test suite there. Any sanitizer
# report fails its test. Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON
cmake --build build-sanitize -j "$(nproc)"
# install_test links the installed (here instrumented) libraries into an uninstrumented example;
# the regular build runs it.
export ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/tools/lsan.supp
ctest --test-dir build-sanitize --output-on-failure -j "$(nproc)" -E '^install_test$' "$@"
