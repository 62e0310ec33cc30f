#include "models/registry.h"

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln {
namespace {

std::map<std::string, ModelFactory>& Registry() {
  static auto* registry = new std::map<std::string, ModelFactory>();
  return *registry;
}

}  // namespace

ModelRegistration::ModelRegistration(const char* name, ModelFactory factory) {
  Registry()[name] = factory;
}

absl::StatusOr<Model> BuildModel(const std::string& name, const ModelOptions& options) {
  auto it = Registry().find(name);
  if (it == Registry().end()) {
    return absl::NotFoundError(absl::StrCat("unknown model '", name, "'; known models: ",
                                            absl::StrJoin(RegisteredModels(), ", ")));
  }
  return it->second(options);
}

std::vector<std::string> RegisteredModels() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : Registry()) names.push_back(name);
  return names;
}

}  // namespace kiln
