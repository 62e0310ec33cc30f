/** \file
 * Export of a compiled model's inference graph as ONNX (opset 13): every layer as the ONNX
 * operator PyTorch's exporter would use, with the parameters and running statistics as
 * initializers under their state_dict names. Dropout is left out (inference), the loss too: the
 * graph's output is the prediction (logits for classifiers).
 *
 *   kiln::Network net(*kiln::FindCompiledModel("lenet5"));
 *   net.LoadCheckpoint("lenet5.safetensors");
 *   absl::Status s = kiln::ExportOnnx(net.model(), net.params(), net.buffers(), "lenet5.onnx");
 *
 * The ONNX checker and ONNX's strict shape inference run before the file is written. Shape
 * inference compares every layer's shape with the one Kiln computed, so an operator whose ONNX
 * semantics give another shape (a pooling window's rounding, say) is an error, not a wrong file.
 */
#ifndef KILN_RUNTIME_ONNX_EXPORT_H_
#define KILN_RUNTIME_ONNX_EXPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "runtime/compiled_model.h"

namespace kiln {

struct OnnxExportOptions {
  /// The batch dimension of the input and output: 0 leaves it symbolic ("batch").
  int batch = 0;
  int opset = 13;
};

/// Writes `model` with parameter values `params` and running statistics `buffers` (the flat
/// arrays of kiln::Network) to `path` as ONNX, atomically. Errors name the path, or the layer
/// whose op has no ONNX export.
absl::Status ExportOnnx(const CompiledModel& model, absl::Span<const float> params,
                        absl::Span<const float> buffers, const std::string& path,
                        const OnnxExportOptions& options = {});

}  // namespace kiln

#endif  // KILN_RUNTIME_ONNX_EXPORT_H_
