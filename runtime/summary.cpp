#include "runtime/summary.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fmt/core.h"

namespace kiln {

std::string GroupThousands(int64_t value) {
  std::string digits = absl::StrCat(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

std::string FormatSummary(const CompiledModel& model) {
  std::string out = fmt::format("Model {}: input {}x{}x{}, {} classes, batch {}, {} schedule\n\n",
                                model.name, model.channels, model.height, model.width,
                                model.num_classes, model.batch_size, model.schedule);
  out += fmt::format("{:<12} {:<20} {:<16} {:>12} {:>14}\n", "Layer", "Op", "Output shape",
                     "Params", "FLOPs");
  out += std::string(78, '-') + "\n";
  int64_t params = 0, flops = 0;
  for (const LayerInfo& layer : model.layers) {
    const std::string shape = absl::StrCat("[", absl::StrJoin(layer.output_shape, ", "), "]");
    out += fmt::format("{:<12} {:<20} {:<16} {:>12} {:>14}\n", layer.name, layer.op, shape,
                       GroupThousands(layer.num_params), GroupThousands(layer.flops));
    params += layer.num_params;
    flops += layer.flops;
  }
  out += std::string(78, '-') + "\n";
  out += fmt::format("Total parameters: {}\n", GroupThousands(params));
  out += fmt::format("Forward FLOPs per image: {} (a multiply-add counts as 2)\n",
                     GroupThousands(flops));
  return out;
}

}  // namespace kiln
