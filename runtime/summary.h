/** \file
 * The model summary table: one row per layer with output shape, parameter count and FLOPs.
 */
#ifndef KILN_RUNTIME_SUMMARY_H_
#define KILN_RUNTIME_SUMMARY_H_

#include <cstdint>
#include <string>

#include "runtime/compiled_model.h"

namespace kiln {

/// Formats `value` with thousands separators: 61706 → "61,706".
std::string GroupThousands(int64_t value);

/// The summary of `model` as printed by `kiln summary`, ending with a newline.
std::string FormatSummary(const CompiledModel& model);

}  // namespace kiln

#endif  // KILN_RUNTIME_SUMMARY_H_
