#include "runtime/onnx_export.h"

#include <cstring>
#include <map>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"
#include "runtime/atomic_file.h"

namespace kiln {
namespace {

// The ONNX graph under construction: layer outputs by layer index, and helpers for nodes.
class GraphBuilder {
 public:
  GraphBuilder(onnx::GraphProto* graph, int batch) : graph_(graph), batch_(batch) {}

  // The value holding `layer`'s output.
  const std::string& value(int layer) const { return values_.at(layer); }
  void set_value(int layer, std::string name) { values_[layer] = std::move(name); }

  // A node `op` reading `inputs`, writing `output`; returns it for attributes.
  onnx::NodeProto* Node(const std::string& op, const std::string& name,
                        const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* node = graph_->add_node();
    node->set_op_type(op);
    node->set_name(name);
    for (const std::string& input : inputs) node->add_input(input);
    node->add_output(output);
    return node;
  }

  // Declares `name` as a float tensor of shape {batch, per_sample...} in `info`.
  void Describe(onnx::ValueInfoProto* info, const std::string& name,
                const std::vector<int64_t>& per_sample) const {
    info->set_name(name);
    onnx::TypeProto_Tensor* tensor = info->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    onnx::TensorShapeProto* shape = tensor->mutable_shape();
    if (batch_ > 0) {
      shape->add_dim()->set_dim_value(batch_);
    } else {
      shape->add_dim()->set_dim_param("batch");
    }
    for (int64_t d : per_sample) shape->add_dim()->set_dim_value(d);
  }

  // Adds an initializer with the values of `info` in `array`; returns its name.
  const std::string& Initializer(const ParamInfo& info, absl::Span<const float> array) {
    onnx::TensorProto* tensor = graph_->add_initializer();
    tensor->set_name(info.name);
    tensor->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : info.shape) tensor->add_dims(d);
    // ONNX's raw_data is little-endian, as x86-64 and AArch64 Linux are.
    tensor->set_raw_data(std::string(reinterpret_cast<const char*>(array.data() + info.offset),
                                     sizeof(float) * info.numel));
    return info.name;
  }

 private:
  onnx::GraphProto* graph_;
  int batch_;
  std::map<int, std::string> values_;
};

void SetInts(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& values) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a->add_ints(v);
}

void SetInt(onnx::NodeProto* node, const std::string& name, int64_t value) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(value);
}

void SetFloat(onnx::NodeProto* node, const std::string& name, float value) {
  onnx::AttributeProto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

// Kernel, stride and padding of a square window, as Conv and the pools take them.
void SetWindow(onnx::NodeProto* node, const LayerAttributes& a) {
  SetInts(node, "kernel_shape", {a.kernel_size, a.kernel_size});
  SetInts(node, "strides", {a.stride, a.stride});
  SetInts(node, "pads", {a.padding, a.padding, a.padding, a.padding});
}

// Builds the inference graph of `model` into `proto`.
absl::Status BuildGraph(const CompiledModel& model, absl::Span<const float> params,
                        absl::Span<const float> buffers, const OnnxExportOptions& options,
                        onnx::ModelProto* proto) {
  onnx::GraphProto* graph = proto->mutable_graph();
  graph->set_name(model.name);
  GraphBuilder g(graph, options.batch);
  std::string output;
  for (int i = 0; i < static_cast<int>(model.layers.size()); ++i) {
    const LayerInfo& l = model.layers[i];
    const LayerAttributes& a = l.attributes;
    std::vector<std::string> in;
    for (int input : l.inputs) in.push_back(g.value(input));
    auto param = [&](size_t k) { return g.Initializer(model.params[l.params[k]], params); };
    auto buffer = [&](size_t k) { return g.Initializer(model.buffers[l.buffers[k]], buffers); };
    const std::string& op = l.op;
    if (op == "input") {
      g.Describe(graph->add_input(), "input", l.output_shape);
      g.set_value(i, "input");
      continue;
    }
    if (op == "dropout") {  // The identity in inference.
      g.set_value(i, in[0]);
      continue;
    }
    if (op == "cross_entropy_loss" || op == "mse_loss" || op == "l1_loss" ||
        op == "bce_with_logits_loss") {
      output = in[0];
      continue;
    }
    // The input, the weight and the bias when the layer has one: Conv's and Gemm's inputs.
    auto weighted = [&] {
      std::vector<std::string> inputs = {in[0], param(0)};
      if (l.params.size() > 1) inputs.push_back(param(1));
      return inputs;
    };
    // The ops that map to one ONNX operator without attributes.
    static const std::map<std::string, std::string> kPlain = {
        {"relu", "Relu"}, {"sigmoid", "Sigmoid"}, {"tanh", "Tanh"},
        {"adaptive_avg_pool2d", "GlobalAveragePool"}, {"add", "Add"}};
    onnx::NodeProto* node = nullptr;
    if (const auto plain = kPlain.find(op); plain != kPlain.end()) {
      node = g.Node(plain->second, l.name, in, l.name);
    } else if (op == "conv2d") {
      node = g.Node("Conv", l.name, weighted(), l.name);
      SetWindow(node, a);
      SetInts(node, "dilations", {a.dilation, a.dilation});
      SetInt(node, "group", a.groups);
    } else if (op == "dense") {
      node = g.Node("Gemm", l.name, weighted(), l.name);
      SetInt(node, "transB", 1);
    } else if (op == "leaky_relu") {
      node = g.Node("LeakyRelu", l.name, in, l.name);
      SetFloat(node, "alpha", a.negative_slope);
    } else if (op == "max_pool2d" || op == "avg_pool2d") {
      node = g.Node(op == "max_pool2d" ? "MaxPool" : "AveragePool", l.name, in, l.name);
      SetWindow(node, a);
      SetInt(node, "ceil_mode", a.ceil_mode ? 1 : 0);
      if (op == "avg_pool2d") SetInt(node, "count_include_pad", a.count_include_pad ? 1 : 0);
    } else if (op == "flatten") {
      node = g.Node("Flatten", l.name, in, l.name);
      SetInt(node, "axis", 1);
    } else if (op == "concat") {
      node = g.Node("Concat", l.name, in, l.name);
      SetInt(node, "axis", 1);
    } else if (op == "batch_norm2d" || op == "batch_norm1d") {
      node = g.Node("BatchNormalization", l.name, {in[0], param(0), param(1), buffer(0), buffer(1)},
                    l.name);
      SetFloat(node, "epsilon", a.eps);
    } else {
      return absl::UnimplementedError(absl::StrCat(
          "layer '", l.name, "' of model '", model.name, "' is a ", op,
          ", which has no ONNX export; export a model without it"));
    }
    g.set_value(i, l.name);
    // Kiln's shape of every layer, which strict shape inference checks against ONNX's.
    g.Describe(graph->add_value_info(), l.name, l.output_shape);
  }
  if (output.empty()) output = g.value(static_cast<int>(model.layers.size()) - 1);
  // The prediction is the graph's output, "output": its value is described there instead.
  for (int k = 0; k < graph->value_info_size(); ++k) {
    if (graph->value_info(k).name() == output) {
      graph->mutable_value_info()->DeleteSubrange(k, 1);
      break;
    }
  }
  g.Node("Identity", "output", {output}, "output");
  g.Describe(graph->add_output(), "output", model.output_shape);
  return absl::OkStatus();
}

}  // namespace

absl::Status ExportOnnx(const CompiledModel& model, absl::Span<const float> params,
                        absl::Span<const float> buffers, const std::string& path,
                        const OnnxExportOptions& options) {
  if (params.size() != static_cast<size_t>(model.num_params) ||
      buffers.size() != static_cast<size_t>(model.num_buffer_values)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ONNX export of model '", model.name, "': ", params.size(), " parameter values and ",
        buffers.size(), " running statistics given; the model has ", model.num_params, " and ",
        model.num_buffer_values));
  }
  if (options.batch < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ONNX export: batch ", options.batch, " is negative; pass 0 for a symbolic batch"));
  }
  onnx::ModelProto proto;
  proto.set_ir_version(onnx::IR_VERSION);
  proto.set_producer_name("kiln");
  proto.set_producer_version("0.1");
  proto.set_doc_string(absl::StrCat("Inference graph of Kiln model '", model.name, "' (",
                                    model.schedule, " schedule)"));
  onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(options.opset);
  absl::Status built = BuildGraph(model, params, buffers, options, &proto);
  if (!built.ok()) return built;
  try {
    onnx::checker::check_model(proto);
    onnx::ModelProto inferred = proto;
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the ONNX graph of model '", model.name,
                                            "' failed ONNX's checks, so '", path,
                                            "' was not written: ", e.what()));
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("failed to serialize the ONNX graph of '", model.name,
                                            "' (over protobuf's 2 GB limit?)"));
  }
  return WriteFileAtomically(path, bytes);
}

}  // namespace kiln
