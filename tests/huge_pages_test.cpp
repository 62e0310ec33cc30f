// The allocator of the model state's flat arrays: aligned mappings marked for transparent huge
// pages above kHugePageMinBytes, malloc below, and ordinary std::vector behaviour in both.
#include <cstdint>
#include <fstream>
#include <new>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "runtime/huge_pages.h"

namespace kiln {
namespace {

constexpr uintptr_t kHugePage = uintptr_t{2} << 20;

// The rest of the line that starts with `field` in the /proc/self/smaps entry of the mapping
// that contains `address`, or "" when there is none.
std::string SmapsField(const void* address, const std::string& field) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = reinterpret_cast<uintptr_t>(address);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> begin >> dash >> end && dash == '-') {
      inside = begin <= at && at < end;
    } else if (inside && line.rfind(field, 0) == 0) {
      return line.substr(field.size());
    }
  }
  return "";
}

// Whether the mapping that contains `address` has the "hg" flag that madvise(MADV_HUGEPAGE)
// sets.
bool AdvisedHugePages(const void* address) {
  return (SmapsField(address, "VmFlags:") + " ").find(" hg ") != std::string::npos;
}

// The kernel's THP mode: "always", "madvise" or "never" (empty when unknown).
std::string ThpMode() {
  std::ifstream file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text;
  std::getline(file, text);
  const size_t open = text.find('['), close = text.find(']');
  if (open == std::string::npos || close == std::string::npos) return "";
  return text.substr(open + 1, close - open - 1);
}

TEST(HugePages, LargeArrayAlignedAndCopied) {
  const size_t count = 61706;  // LeNet-5's parameters: 247 KB.
  ASSERT_GE(count * sizeof(float), kHugePageMinBytes);
  FloatArray values(count);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(values.data()) % kHugePage, 0u);
  for (size_t i = 0; i < count; ++i) values[i] = static_cast<float>(i);
  FloatArray copy = values;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(copy.data()) % kHugePage, 0u);
  EXPECT_NE(copy.data(), values.data());
  values.resize(10 * count, -1.0f);  // 2.5 MB: over one huge page, not a whole number of them.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(values.data()) % kHugePage, 0u);
  for (size_t i = 0; i < count; ++i) {
    ASSERT_EQ(values[i], static_cast<float>(i)) << "at " << i;
    ASSERT_EQ(copy[i], static_cast<float>(i)) << "at " << i;
  }
  EXPECT_EQ(values.back(), -1.0f);
}

TEST(HugePages, LargeArrayMarkedForThp) {
  const std::string mode = ThpMode();
  if (mode != "always" && mode != "madvise") {
    GTEST_SKIP() << "transparent huge pages are '" << mode << "' on this kernel";
  }
  FloatArray values(size_t{1} << 20, 1.0f);
  EXPECT_TRUE(AdvisedHugePages(values.data()));
  const std::string eligible = SmapsField(values.data(), "THPeligible:");
  if (eligible.empty()) GTEST_SKIP() << "this kernel's smaps has no THPeligible field";
  EXPECT_EQ(std::stoi(eligible), 1) << "THP mode " << mode;
}

TEST(HugePages, ThresholdSplitsMallocAndMappings) {
  const std::string mode = ThpMode();
  if (mode != "always" && mode != "madvise") {
    GTEST_SKIP() << "transparent huge pages are '" << mode << "' on this kernel";
  }
  const size_t threshold = kHugePageMinBytes / sizeof(float);
  FloatArray below(threshold - 1, 1.0f), at(threshold, 1.0f);
  EXPECT_FALSE(AdvisedHugePages(below.data()));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(at.data()) % kHugePage, 0u);
  EXPECT_TRUE(AdvisedHugePages(at.data()));
}

TEST(HugePages, OversizedRequestsThrowBadAlloc) {
  // Sizes whose rounding to huge pages, or whose byte count, would wrap around.
  EXPECT_THROW(AllocateOnHugePages(SIZE_MAX - 100), std::bad_alloc);
  EXPECT_THROW(HugePageAllocator<float>().allocate(SIZE_MAX / sizeof(float) + 2), std::bad_alloc);
}

TEST(HugePages, SmallArrayBehavesAsVector) {
  FloatArray small(16, 2.0f);
  small.push_back(3.0f);
  ASSERT_EQ(small.size(), 17u);
  EXPECT_EQ(small.front(), 2.0f);
  EXPECT_EQ(small.back(), 3.0f);
  FloatArray empty;
  empty.shrink_to_fit();
  EXPECT_TRUE(empty.empty());
}

}  // namespace
}  // namespace kiln
