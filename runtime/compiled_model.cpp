#include "runtime/compiled_model.h"

#include <map>

namespace kiln {
namespace {

std::map<std::string, const CompiledModel*>& Registry() {
  static auto* registry = new std::map<std::string, const CompiledModel*>();
  return *registry;
}

}  // namespace

CompiledModelRegistration::CompiledModelRegistration(const CompiledModel* model) {
  Registry()[model->name] = model;
}

const CompiledModel* FindCompiledModel(const std::string& name) {
  auto it = Registry().find(name);
  return it == Registry().end() ? nullptr : it->second;
}

std::vector<std::string> CompiledModelNames() {
  std::vector<std::string> names;
  for (const auto& [name, model] : Registry()) names.push_back(name);
  return names;
}

}  // namespace kiln
