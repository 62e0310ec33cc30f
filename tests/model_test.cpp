// Shape inference, parameter naming and definition errors of the model DSL.
#include "compiler/model.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "models/registry.h"

namespace kiln {
namespace {

using ::testing::HasSubstr;

TEST(Lenet5, HasClassicParameterCount) {
  absl::StatusOr<Model> model = BuildModel("lenet5", {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->num_params(), 61706);
}
}  // namespace
}  // namespace kiln
