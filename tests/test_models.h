/** \file
 * Small models shared by the compiler tests.
 */
#ifndef KILN_TESTS_TEST_MODELS_H_
#define KILN_TESTS_TEST_MODELS_H_

#include "absl/status/statusor.h"
#include "compiler/model.h"

namespace kiln::test_models {

/// A LeNet-like model small enough to JIT in seconds: two conv → relu → max_pool2d blocks on a
/// 1×12×12 input (fused by the manual schedule's inference path), then dense 10 and dense 5.
inline absl::StatusOr<Model> SmallLenet(int batch) {
  ModelBuilder net("small_lenet", ModelOptions{batch});
  Tensor x = net.input(1, 12, 12);
  x = net.conv2d("conv1", x, 4, 3, /*stride=*/1, /*padding=*/1);
  x = net.relu(x);
  x = net.max_pool2d(x, 2);
  x = net.conv2d("conv2", x, 6, 3);
  x = net.relu(x);
  x = net.max_pool2d(x, 2);
  x = net.flatten(x);
  x = net.dense("fc1", x, 10);
  x = net.relu(x);
  x = net.dense("fc2", x, 5);
  net.cross_entropy_loss(x, 5);
  return std::move(net).build();
}

}  // namespace kiln::test_models

#endif  // KILN_TESTS_TEST_MODELS_H_
