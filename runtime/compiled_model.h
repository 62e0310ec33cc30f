/** \file
 * The interface between Kiln's generated code and its runtime: the description of a compiled
 * model (parameters, layers, shapes) and its three compiled functions.
 *
 * Each generated `<model>_model.cpp` defines one CompiledModel and registers it:
 *
 *   const kiln::CompiledModel* m = kiln::FindCompiledModel("lenet5");
 *   m->forward(images, params.data(), logits);
 */
#ifndef KILN_RUNTIME_COMPILED_MODEL_H_
#define KILN_RUNTIME_COMPILED_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "HalideRuntime.h"

namespace kiln {

/// A learnable tensor: PyTorch `state_dict` name and shape, and its position (in floats) in the
/// model's flat parameter array. Initialized uniform in ±1/sqrt(fan_in).
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;
  int64_t numel = 0;
  int64_t fan_in = 0;
};

/// One row of the model summary.
struct LayerInfo {
  std::string name;
  std::string op;
  std::vector<int64_t> output_shape;  ///< Per sample, PyTorch order.
  int64_t num_params = 0;
  int64_t flops = 0;  ///< Forward FLOPs per sample; a multiply-add counts as 2.
};

// The compiled functions. Buffers follow PyTorch memory order with Halide dimensions reversed:
// images (x, y, c, n) float, labels (n) int32, logits (class, n) float, each parameter and its
// gradient with the shape of ParamInfo reversed. `params` and `grads` point to one buffer per
// ParamInfo, in order. Each returns 0 or a Halide error code.
using ForwardFn = int (*)(halide_buffer_t* images, halide_buffer_t* const* params,
                          halide_buffer_t* logits);
using BackwardFn = int (*)(halide_buffer_t* images, halide_buffer_t* labels,
                           halide_buffer_t* const* params, halide_buffer_t* loss,
                           halide_buffer_t* correct, halide_buffer_t* const* grads);
/// SGD with momentum and weight decay on the flat arrays (torch.optim.SGD semantics). The output
/// buffers may alias `params` and `velocity` (in-place update).
using UpdateFn = int (*)(float lr, float momentum, float weight_decay, halide_buffer_t* params,
                         halide_buffer_t* grads, halide_buffer_t* velocity,
                         halide_buffer_t* params_out, halide_buffer_t* velocity_out);

/// Everything the runtime needs about one compiled model.
struct CompiledModel {
  std::string name;
  std::string schedule;  ///< manual, li2018, mullapudi2016 or adams2019.
  std::string target;    ///< The Halide target the functions were compiled for.
  int batch_size = 0;    ///< The batch the model was defined and tuned for.
  int channels = 0, height = 0, width = 0;
  int num_classes = 0;
  int64_t num_params = 0;
  std::vector<ParamInfo> params;
  std::vector<LayerInfo> layers;
  ForwardFn forward = nullptr;
  BackwardFn backward = nullptr;
  UpdateFn update = nullptr;
};

/// Returns the registered compiled model `name`, or nullptr.
const CompiledModel* FindCompiledModel(const std::string& name);
/// Names of all compiled models linked into this program, sorted.
std::vector<std::string> CompiledModelNames();

/// Adds a model to the registry at static-initialization time (used by generated code).
struct CompiledModelRegistration {
  explicit CompiledModelRegistration(const CompiledModel* model);
};

}  // namespace kiln

#endif  // KILN_RUNTIME_COMPILED_MODEL_H_
