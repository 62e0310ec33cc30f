#!/usr/bin/env bash
# Installs the Debian 12 packages Kiln builds, tests and trains with. Safe to run again: it only
# calls apt-get when a package is missing. Needs root or sudo.
set -euo pipefail

packages=(
  cmake g++ make
  libhalide14-0-dev   # Halide 14 and LLVM 14: the compiler's code generator
  libabsl-dev         # Status, flags, strings
  libfmt-dev
  libgtest-dev libgmock-dev
  zlib1g-dev          # reads the gzip-compressed IDX files
  nlohmann-json3-dev  # safetensors headers
  libpng-dev          # PNG plots of kiln-regression
  libplplot-dev       # charts of training runs (runtime/figures.h)
  plplot-driver-cairo # PLplot's PNG device, pngcairo
  libonnx-dev         # kiln export --format onnx: the ONNX protobuf classes and checker
  libprotobuf-dev     # the protobuf library and headers that ONNX's CMake package needs
  clang libclang-rt-14-dev  # libFuzzer and the sanitizer runtimes of tools/fuzz.sh
  dataset-fashion-mnist
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages are installed"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "install-deps: missing packages (${missing[*]}); run this script as root or install sudo" >&2
    exit 1
  fi
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
