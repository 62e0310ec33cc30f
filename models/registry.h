/** \file
 * The registry of model definitions: each file in models/ registers a function that builds its
 * Model, and the generator and tests look models up by name.
 *
 *   KILN_REGISTER_MODEL(lenet5, Lenet5);   // in models/lenet5.cpp
 *   absl::StatusOr<kiln::Model> m = kiln::BuildModel("lenet5", {});
 */
#ifndef KILN_MODELS_REGISTRY_H_
#define KILN_MODELS_REGISTRY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "compiler/model.h"

namespace kiln {

using ModelFactory = absl::StatusOr<Model> (*)(const ModelOptions& options);

/// Builds the registered model `name`; NotFound lists the registered names.
absl::StatusOr<Model> BuildModel(const std::string& name, const ModelOptions& options);

/// Names of all registered models, sorted.
std::vector<std::string> RegisteredModels();

/// Adds a model to the registry at static-initialization time; use KILN_REGISTER_MODEL.
struct ModelRegistration {
  ModelRegistration(const char* name, ModelFactory factory);
};

}  // namespace kiln

/// Registers `factory` under the model name `name` (an identifier, e.g. lenet5). Link the
/// defining file as an object (not from a static library), or the linker drops the registration.
#define KILN_REGISTER_MODEL(name, factory) \
  static const ::kiln::ModelRegistration kiln_model_registration_##name(#name, factory)

#endif  // KILN_MODELS_REGISTRY_H_
