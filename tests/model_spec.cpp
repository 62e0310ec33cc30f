#include "tests/model_spec.h"

#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kiln {
namespace {

// One statement of a spec: its line number, op and key=value fields.
struct Statement {
  int line = 0;
  std::string op;
  std::map<std::string, std::string> fields;

  std::string where() const { return absl::StrCat("spec line ", line, " (", op, ")"); }
};

absl::StatusOr<std::vector<Statement>> SplitStatements(const std::string& spec) {
  std::vector<Statement> statements;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(spec, '\n')) {
    ++line_number;
    line = line.substr(0, line.find('#'));
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    Statement s;
    s.line = line_number;
    s.op = std::string(words[0]);
    for (size_t i = 1; i < words.size(); ++i) {
      const size_t equals = words[i].find('=');
      if (equals == absl::string_view::npos || equals == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(s.where(), ": '", words[i], "' is not a key=value field"));
      }
      const std::string key(words[i].substr(0, equals));
      if (!s.fields.emplace(key, std::string(words[i].substr(equals + 1))).second) {
        return absl::InvalidArgumentError(absl::StrCat(s.where(), ": key '", key, "' is repeated"));
      }
    }
    statements.push_back(std::move(s));
  }
  return statements;
}

// Typed access to the fields of one statement. The first invalid value is kept in status(), and
// Finish() also rejects keys that nothing read.
class Fields {
 public:
  explicit Fields(const Statement& statement) : statement_(statement) {}

  bool Has(const std::string& key) const { return statement_.fields.count(key) > 0; }

  std::string String(const std::string& key, const std::string& fallback) {
    used_.insert(key);
    auto it = statement_.fields.find(key);
    return it == statement_.fields.end() ? fallback : it->second;
  }

  std::string RequiredString(const std::string& key) {
    if (!Has(key)) Fail(absl::StrCat(key, "= is required"));
    return String(key, "");
  }

  int64_t Int(const std::string& key, int64_t fallback) {
    if (!Has(key)) return fallback;
    int64_t value = 0;
    const std::string text = String(key, "");
    if (!absl::SimpleAtoi(text, &value)) Fail(absl::StrCat(key, "='", text, "' is not an integer"));
    return value;
  }

  int64_t RequiredInt(const std::string& key) {
    if (!Has(key)) Fail(absl::StrCat(key, "= is required"));
    return Int(key, 0);
  }

  float Float(const std::string& key, float fallback) {
    if (!Has(key)) return fallback;
    float value = 0;
    const std::string text = String(key, "");
    if (!absl::SimpleAtof(text, &value)) Fail(absl::StrCat(key, "='", text, "' is not a number"));
    return value;
  }

  bool Bool(const std::string& key, bool fallback) {
    if (!Has(key)) return fallback;
    const std::string text = String(key, "");
    if (text == "true" || text == "1") return true;
    if (text == "false" || text == "0") return false;
    Fail(absl::StrCat(key, "='", text, "' is not true, false, 1 or 0"));
    return fallback;
  }

  void Fail(const std::string& what) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(absl::StrCat(statement_.where(), ": ", what));
  }

  absl::Status Finish() {
    for (const auto& [key, value] : statement_.fields) {
      if (used_.count(key) == 0) Fail(absl::StrCat("unknown key '", key, "'"));
    }
    return status_;
  }

 private:
  const Statement& statement_;
  std::set<std::string> used_;
  absl::Status status_;
};

bool IsLayerOp(const std::string& op) {
  static const std::set<std::string>* ops = new std::set<std::string>{
      "input", "conv2d", "relu", "leaky_relu", "sigmoid", "tanh", "max_pool2d", "avg_pool2d",
      "adaptive_avg_pool2d", "flatten", "dense", "add", "concat", "dropout", "batch_norm2d",
      "batch_norm1d", "cross_entropy_loss", "mse_loss", "l1_loss", "bce_with_logits_loss"};
  return ops->count(op) > 0;
}

bool IsNamedOp(const std::string& op) {
  return op == "conv2d" || op == "dense" || op == "batch_norm2d" || op == "batch_norm1d";
}

bool IsLossOp(const std::string& op) {
  return op == "cross_entropy_loss" || op == "mse_loss" || op == "l1_loss" ||
         op == "bce_with_logits_loss";
}

// Feeds statements to a ModelBuilder, keeping each layer's tensor by name.
class SpecBuilder {
 public:
  SpecBuilder(const std::string& name, int batch) : net_(name, ModelOptions{batch}) {}

  absl::Status Add(const Statement& s) {
    Fields fields(s);
    if (s.op == "begin_block") {
      net_.begin_block(fields.RequiredString("name"));
      return fields.Finish();
    }
    if (s.op == "end_block") {
      net_.end_block();
      return fields.Finish();
    }
    if (s.op == "model") {
      return absl::InvalidArgumentError(
          absl::StrCat(s.where(), ": the model line must come before every layer"));
    }
    if (!IsLayerOp(s.op)) {
      return absl::InvalidArgumentError(absl::StrCat(s.where(), ": unknown op"));
    }
    absl::StatusOr<std::string> name = LayerName(s, fields);
    if (!name.ok()) return name.status();
    absl::StatusOr<Tensor> out = AddLayer(s, *name, fields);
    if (!out.ok()) return out.status();
    if (absl::Status status = fields.Finish(); !status.ok()) return status;
    layers_[*name] = *out;
    names_.push_back(*name);
    last_ = *name;
    return absl::OkStatus();
  }

  absl::StatusOr<Model> Build() && {
    absl::StatusOr<Model> model = std::move(net_).build();
    if (!model.ok()) return model.status();
    // The automatic names above must be ModelBuilder's, or `from=` would name other layers.
    for (size_t i = 0; i < model->layers.size() && i < names_.size(); ++i) {
      if (model->layers[i].name != names_[i]) {
        return absl::InternalError(absl::StrCat("layer ", i, " is named '", model->layers[i].name,
                                                "' by ModelBuilder but '", names_[i],
                                                "' by the spec parser; update tests/model_spec.cpp"));
      }
    }
    return model;
  }

 private:
  // The layer's name: given for conv2d, dense and batch_norm, else ModelBuilder's automatic one.
  absl::StatusOr<std::string> LayerName(const Statement& s, Fields& fields) {
    if (IsNamedOp(s.op)) return fields.RequiredString("name");
    std::string automatic;
    if (s.op == "input") {
      automatic = "input";
    } else if (IsLossOp(s.op)) {
      automatic = "loss";
    } else {
      automatic = absl::StrCat(s.op, ++counts_[s.op]);
    }
    const std::string given = fields.String("name", automatic);
    if (given != automatic) {
      return absl::InvalidArgumentError(absl::StrCat(
          s.where(), ": name '", given, "' differs from the automatic name '", automatic, "'"));
    }
    return automatic;
  }

  absl::StatusOr<Tensor> Input(const Statement& s, const std::string& name) {
    auto it = layers_.find(name);
    if (it == layers_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          s.where(), ": input layer '", name, "' is not defined on an earlier line"));
    }
    return it->second;
  }

  absl::StatusOr<Tensor> AddLayer(const Statement& s, const std::string& name, Fields& f) {
    const std::string& op = s.op;
    if (op == "input") {
      if (f.Has("features")) return net_.input(f.Int("features", 0));
      return net_.input(f.RequiredInt("channels"), f.RequiredInt("height"), f.RequiredInt("width"));
    }
    if (op == "add") {
      absl::StatusOr<Tensor> a = Input(s, f.RequiredString("a"));
      absl::StatusOr<Tensor> b = Input(s, f.RequiredString("b"));
      if (!a.ok()) return a.status();
      if (!b.ok()) return b.status();
      return net_.add(*a, *b);
    }
    if (op == "concat") {
      std::vector<Tensor> xs;
      for (absl::string_view source : absl::StrSplit(f.RequiredString("from"), ',')) {
        absl::StatusOr<Tensor> x = Input(s, std::string(source));
        if (!x.ok()) return x.status();
        xs.push_back(*x);
      }
      return net_.concat(xs);
    }

    absl::StatusOr<Tensor> in = Input(s, f.String("from", last_));
    if (!in.ok()) return in.status();
    const Tensor x = *in;
    if (op == "conv2d") {
      const int64_t out_channels = f.RequiredInt("out_channels");
      const int64_t kernel_size = f.RequiredInt("kernel_size");
      return net_.conv2d(name, x, out_channels, kernel_size, f.Int("stride", 1),
                         f.Int("padding", 0), f.Bool("bias", true), f.Int("dilation", 1),
                         f.Int("groups", 1));
    }
    if (op == "relu") return net_.relu(x);
    if (op == "leaky_relu") return net_.leaky_relu(x, f.Float("negative_slope", 0.01f));
    if (op == "sigmoid") return net_.sigmoid(x);
    if (op == "tanh") return net_.tanh(x);
    if (op == "max_pool2d" || op == "avg_pool2d") {
      const int64_t kernel_size = f.RequiredInt("kernel_size");
      const int64_t stride = f.Int("stride", 0);
      const int64_t padding = f.Int("padding", 0);
      const bool ceil_mode = f.Bool("ceil_mode", false);
      if (op == "max_pool2d") return net_.max_pool2d(x, kernel_size, stride, padding, ceil_mode);
      return net_.avg_pool2d(x, kernel_size, stride, padding, ceil_mode,
                             f.Bool("count_include_pad", true));
    }
    if (op == "adaptive_avg_pool2d") return net_.adaptive_avg_pool2d(x);
    if (op == "flatten") return net_.flatten(x);
    if (op == "dense") {
      const int64_t out_features = f.RequiredInt("out_features");
      return net_.dense(name, x, out_features, f.Bool("bias", true));
    }
    if (op == "dropout") return net_.dropout(x, f.Float("p", 0.5f));
    if (op == "batch_norm2d" || op == "batch_norm1d") {
      const float eps = f.Float("eps", 1e-5f);
      const float momentum = f.Float("momentum", 0.1f);
      return op == "batch_norm2d" ? net_.batch_norm2d(name, x, eps, momentum)
                                  : net_.batch_norm1d(name, x, eps, momentum);
    }
    if (op == "cross_entropy_loss") {
      const int64_t num_classes = f.RequiredInt("num_classes");
      net_.cross_entropy_loss(x, num_classes, f.Float("label_smoothing", 0));
      return Tensor{};
    }
    if (IsLossOp(op)) {
      const std::string target = f.String("target", "data");
      if (target != "data" && target != "input") {
        return absl::InvalidArgumentError(
            absl::StrCat(s.where(), ": target='", target, "' is neither data nor input"));
      }
      const Tensor target_tensor = target == "input" ? layers_["input"] : Tensor{};
      if (op == "mse_loss") net_.mse_loss(x, target_tensor);
      if (op == "l1_loss") net_.l1_loss(x, target_tensor);
      if (op == "bce_with_logits_loss") net_.bce_with_logits_loss(x, target_tensor);
      return Tensor{};
    }
    return absl::InternalError(absl::StrCat(s.where(), ": the op is known but not built"));
  }

  ModelBuilder net_;
  std::map<std::string, Tensor> layers_;
  std::map<std::string, int> counts_;  // Layers so far per op with automatic names.
  std::vector<std::string> names_;     // In definition order.
  std::string last_;
};

}  // namespace

absl::StatusOr<Model> BuildModelFromSpec(const std::string& spec, int batch) {
  absl::StatusOr<std::vector<Statement>> statements = SplitStatements(spec);
  if (!statements.ok()) return statements.status();

  std::string model_name = "spec";
  size_t first = 0;
  if (!statements->empty() && statements->front().op == "model") {
    Fields fields(statements->front());
    model_name = fields.RequiredString("name");
    if (absl::Status status = fields.Finish(); !status.ok()) return status;
    first = 1;
  }

  // The builder keeps a pointer to itself in every Tensor, so it stays where it is constructed.
  SpecBuilder builder(model_name, batch);
  for (size_t i = first; i < statements->size(); ++i) {
    if (absl::Status status = builder.Add((*statements)[i]); !status.ok()) return status;
  }
  return std::move(builder).Build();
}

}  // namespace kiln
