#include "compiler/lower.h"

#include <string>

#include "absl/strings/str_replace.h"

namespace kiln {
namespace {

// Halide names may not contain '.', which PyTorch names use between module and tensor.
std::string HalideName(const std::string& param_name) {
  return absl::StrReplaceAll(param_name, {{".", "_"}});
}

// Builds inputs, parameters and every layer up to the logits.
LoweredNetwork LowerLayers(const Model& model) {
  const ops::Vars& v = ops::vars();
  LoweredNetwork net;
  const Layer& input_layer = model.input_layer();
  net.images = Halide::ImageParam(Halide::Float(32), 4, "images");
  // The clamp on n lets schedules compute whole vectors of samples past a partial last batch:
  // those lanes repeat the last sample and never reach an output.
  net.input = Halide::Func("input");
  net.input(v.x, v.y, v.c, v.n) =
      net.images(v.x, v.y, v.c, Halide::clamp(v.n, 0, net.images.dim(3).extent() - 1));

  // Fixed extents let bounds inference and the schedules rely on exact sizes. The batch stays
  // free, so one function serves full batches and the last partial one.
  for (int d = 0; d < 3; ++d) {
    const int extent = static_cast<int>(input_layer.output_shape[2 - d]);
    net.images.dim(d).set_bounds(0, extent).set_estimate(0, extent);
  }
  net.images.dim(3).set_min(0).set_estimate(0, model.batch_size);
  net.images.dim(0).set_stride(1);

  for (const Param& p : model.params) {
    const int dims = static_cast<int>(p.shape.size());
    Halide::ImageParam param(Halide::Float(32), dims, HalideName(p.name));
    for (int d = 0; d < dims; ++d) {
      const int extent = static_cast<int>(p.shape[dims - 1 - d]);
      param.dim(d).set_bounds(0, extent).set_estimate(0, extent);
    }
    std::vector<Halide::Var> vars(dims);
    std::vector<Halide::Expr> call(vars.begin(), vars.end());
    Halide::Func wrapper(HalideName(p.name) + "_value");
    wrapper(vars) = param(call);
    net.params.push_back(param);
    net.param_funcs.push_back(wrapper);
  }

  auto param_func = [&](const Layer& layer, size_t i) {
    return i < layer.params.size() ? net.param_funcs[layer.params[i]] : Halide::Func();
  };
  net.layers.resize(model.layers.size());
  net.layers[0] = {net.input, {}};
  for (size_t i = 1; i < model.layers.size(); ++i) {
    const Layer& layer = model.layers[i];
    if (layer.kind == OpKind::kCrossEntropyLoss) break;
    const std::vector<int64_t>& in_shape = model.layers[layer.input].output_shape;
    Halide::Func in = net.layers[layer.input].output;
    switch (layer.kind) {
      case OpKind::kConv2d:
        net.layers[i] = ops::Conv2d(layer, in_shape, in, param_func(layer, 0), param_func(layer, 1));
        break;
      case OpKind::kRelu: net.layers[i] = ops::Relu(layer, in_shape, in); break;
      case OpKind::kMaxPool2d: net.layers[i] = ops::MaxPool2d(layer, in); break;
      case OpKind::kFlatten: net.layers[i] = ops::Flatten(layer, in_shape, in); break;
      case OpKind::kDense:
        net.layers[i] = ops::Dense(layer, in_shape, in, param_func(layer, 0), param_func(layer, 1));
        break;
      case OpKind::kInput:
      case OpKind::kCrossEntropyLoss: break;
    }
  }
  net.logits = net.layers[model.loss_layer().input].output;
  return net;
}

}  // namespace

std::vector<Halide::Argument> LoweredNetwork::arguments(bool training) const {
  std::vector<Halide::Argument> args = {images};
  if (training) args.push_back(labels);
  for (const Halide::ImageParam& p : params) args.push_back(p);
  return args;
}

std::vector<Halide::Func> LoweredNetwork::training_outputs() const {
  std::vector<Halide::Func> outputs = {loss.loss, loss.correct};
  outputs.insert(outputs.end(), grads.begin(), grads.end());
  return outputs;
}

LoweredNetwork LowerForward(const Model& model) {
  LoweredNetwork net = LowerLayers(model);
  const int classes = static_cast<int>(model.loss_layer().num_classes);
  net.logits.set_estimates({{0, classes}, {0, model.batch_size}});
  return net;
}

LoweredNetwork LowerTraining(const Model& model) {
  LoweredNetwork net = LowerLayers(model);
  net.labels = Halide::ImageParam(Halide::Int(32), 1, "labels");
  net.labels.dim(0).set_min(0).set_estimate(0, model.batch_size);
  Halide::Func labels("label");
  labels(ops::vars().n) = net.labels(Halide::clamp(ops::vars().n, 0, net.labels.dim(0).extent() - 1));

  net.loss = ops::CrossEntropyLoss(model.loss_layer().num_classes, net.images.dim(3).extent(),
                                   net.logits, labels);
  net.loss.loss.set_estimates({});
  net.loss.correct.set_estimates({});

  // Reverse mode from the scalar loss: one adjoint Func per forward Func and per parameter.
  Halide::Derivative d = Halide::propagate_adjoints(net.loss.loss);
  for (size_t i = 0; i < model.params.size(); ++i) {
    const Param& p = model.params[i];
    const int dims = static_cast<int>(p.shape.size());
    std::vector<Halide::Var> vars(dims);
    std::vector<Halide::Expr> call(vars.begin(), vars.end());
    Halide::Func grad(HalideName(p.name) + "_grad");
    grad(vars) = d(net.param_funcs[i])(call);
    Halide::Region estimates;
    for (int k = 0; k < dims; ++k) estimates.push_back({0, static_cast<int>(p.shape[dims - 1 - k])});
    grad.set_estimates(estimates);
    net.grads.push_back(grad);
  }

  const ops::Vars& v = ops::vars();
  net.input_grad = Halide::Func("images_grad");
  net.input_grad(v.x, v.y, v.c, v.n) = d(net.input)(v.x, v.y, v.c, v.n);
  const std::vector<int64_t>& shape = model.input_layer().output_shape;  // {C, H, W}
  net.input_grad.set_estimates({{0, static_cast<int>(shape[2])},
                                {0, static_cast<int>(shape[1])},
                                {0, static_cast<int>(shape[0])},
                                {0, model.batch_size}});
  return net;
}

std::vector<Halide::Argument> LoweredUpdate::arguments() const {
  return {lr, momentum, weight_decay, params, grads, velocity};
}

LoweredUpdate LowerSgdUpdate(const Model& model) {
  LoweredUpdate u;
  const int count = static_cast<int>(model.num_params());
  for (Halide::ImageParam* p : {&u.params, &u.grads, &u.velocity}) {
    p->dim(0).set_bounds(0, count).set_estimate(0, count);
  }
  // Typical values, for the autoschedulers that ask for estimates of every input.
  u.lr.set_estimate(0.01f);
  u.momentum.set_estimate(0.9f);
  u.weight_decay.set_estimate(0.0f);
  Halide::Var i("i");
  Halide::Expr g = u.grads(i) + u.weight_decay * u.params(i);
  Halide::Expr velocity = u.momentum * u.velocity(i) + g;
  u.updated(i) = Halide::Tuple(u.params(i) - u.lr * velocity, velocity);
  u.updated.set_estimates({{0, count}});
  return u;
}

}  // namespace kiln
