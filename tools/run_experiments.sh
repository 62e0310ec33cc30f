#!/usr/bin/env bash
# Runs the three training experiments of docs/training.md with build/kiln on Fashion-MNIST and
# writes their run directories (metrics, figures, report.html) under OUT (default
# build/experiments) and the charts of docs/training.md into docs/images/. About 4 minutes on
# 2 cores.
#
#   tools/run_experiments.sh [augmentation|transfer|gradients|all] [OUT]
set -euo pipefail

cd "$(dirname "$0")/.."
which=${1:-all}
out=${2:-build/experiments}
kiln=build/kiln
threads=${KILN_THREADS:-2}
if [ ! -x "$kiln" ]; then
  echo "run_experiments: $kiln is missing; build first (tools/build.sh)" >&2
  exit 1
fi
mkdir -p "$out" docs/images

# 1. Augmentation against overfitting: 2,000 training images, with and without augmentation.
augmentation() {
  local common=(--model lenet5 --train-limit 2000 --epochs 60 --lr 0.03 --momentum 0.9
                --seed 0 --threads "$threads")
  local spec="hflip,resized_crop(scale=0.8:1,ratio=0.9:1.1)"
  "$kiln" train --overwrite "${common[@]}" --run-dir "$out/augmentation/plain"
  "$kiln" train --overwrite "${common[@]}" --augment "$spec" --run-dir "$out/augmentation/augmented"
  local runs="plain=$out/augmentation/plain/metrics.jsonl"
  runs+=",augmented=$out/augmentation/augmented/metrics.jsonl"
  "$kiln" plot-runs --metric accuracy --output docs/images/augmentation_accuracy.png \
      --runs "$runs"
  # All five transforms, for the eye (jitter's saturation and hue do nothing on grayscale).
  local all="hflip,resized_crop(scale=0.5:1),perspective(distortion=0.4,p=0.5),"
  all+="jitter(brightness=0.4,contrast=0.4),erase(p=0.5)"
  "$kiln" augment-preview --images 6 --variants 7 --output docs/images/augmentation_samples.png \
      --augment "$all"
}

# 2. Transfer: pretrain on classes 0-4, then classes 5-9 with 50 images per class or all of them,
# as a fixed feature extractor (only fc2 trains), fine-tuned, or from scratch.
transfer() {
  local dir="$out/transfer"
  mkdir -p "$dir"
  "$kiln" train --overwrite --model lenet5 --classes 0-4 --epochs 10 --lr 0.01 --momentum 0.9 \
      --seed 0 --threads "$threads" --checkpoint "$dir/pretrained.safetensors"
  local target
  for target in small large; do
    local size=() epochs=8 batch=()
    if [ "$target" = small ]; then
      size=(--train-per-class 50)
      epochs=60
      batch=(--batch-size 25)
    fi
    local common=(--classes 5-9 "${size[@]}" "${batch[@]}" --epochs "$epochs" --momentum 0.9
                  --seed 1 --threads "$threads")
    "$kiln" train --overwrite --model lenet5_c5_features "${common[@]}" --lr 0.01 \
        --init-from "$dir/pretrained.safetensors" --run-dir "$dir/$target-features"
    "$kiln" train --overwrite --model lenet5_c5 "${common[@]}" --lr 0.003 \
        --lr-mult conv1=0.1,conv2=0.1,conv3=0.3 \
        --init-from "$dir/pretrained.safetensors" --run-dir "$dir/$target-finetune"
    "$kiln" train --overwrite --model lenet5_c5 "${common[@]}" --lr 0.01 \
        --run-dir "$dir/$target-scratch"
  done
}

# 3. Vanishing gradients: twelve dense layers with sigmoid, ReLU, ReLU + BatchNorm, residual.
gradients() {
  local runs=() variant
  for variant in deep_sigmoid deep_relu deep_relu_bn deep_residual; do
    "$kiln" train --overwrite --model "$variant" --epochs 5 --lr 0.01 --momentum 0.9 --seed 0 \
        --threads "$threads" --log-grad-norms --run-dir "$out/gradients/$variant"
    runs+=("$variant=$out/gradients/$variant/metrics.jsonl")
  done
  local joined
  joined=$(IFS=,; echo "${runs[*]}")
  "$kiln" plot-runs --metric layer-norms --runs "$joined" \
      --output docs/images/gradients_by_layer.png
  cp "$out/gradients/deep_sigmoid/grad_norms.png" docs/images/gradients_sigmoid_steps.png
}

case "$which" in
  augmentation) augmentation ;;
  transfer) transfer ;;
  gradients) gradients ;;
  all) augmentation; transfer; gradients ;;
  *) echo "run_experiments: unknown experiment '$which';" \
          "use augmentation, transfer, gradients or all" >&2
     exit 2 ;;
esac
