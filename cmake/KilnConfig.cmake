# The installed Kiln package. find_package(Kiln) defines
#   Kiln::core      the runtime an application links to embed a compiled model
#                   (runtime/api/trainer.h): no Halide or LLVM, at build time or at run time;
#   Kiln::compiler, Kiln::gen_main
#                   the DSL compiler and generator main, for the generators kiln_add_model builds;
#   kiln_add_model  compiles a model definition into the object library kiln_model_<name>;
#   KILN_MODELS_DIR the model zoo's definitions (lenet5.cpp, resnet.cpp, ...).
# The Halide runtime and the optimizers were compiled for the target the package was built for.
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(ZLIB)
find_dependency(absl)
find_dependency(fmt)
find_dependency(Halide)  # Only the generators link it.

get_filename_component(_kiln_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(_kiln_libdir "${_kiln_prefix}/lib/kiln")

if(NOT TARGET Kiln::core)
  add_library(Kiln::halide_runtime STATIC IMPORTED)
  set_target_properties(Kiln::halide_runtime PROPERTIES
    IMPORTED_LOCATION "${_kiln_libdir}/halide_runtime.a"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS}")
  add_library(Kiln::optimizers STATIC IMPORTED)
  set_target_properties(Kiln::optimizers PROPERTIES
    IMPORTED_LOCATION "${_kiln_libdir}/kiln_optimizers.a"
    INTERFACE_LINK_LIBRARIES Kiln::halide_runtime)
  add_library(Kiln::core STATIC IMPORTED)
  set_target_properties(Kiln::core PROPERTIES
    IMPORTED_LOCATION "${_kiln_libdir}/libkiln_core.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_kiln_prefix}/include/kiln"
    INTERFACE_LINK_LIBRARIES
      "absl::status;absl::statusor;absl::strings;absl::str_format;fmt::fmt;ZLIB::ZLIB;Threads::Threads;Kiln::optimizers")
  add_library(Kiln::compiler STATIC IMPORTED)
  set_target_properties(Kiln::compiler PROPERTIES
    IMPORTED_LOCATION "${_kiln_libdir}/libkiln_compiler.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_kiln_prefix}/include/kiln"
    INTERFACE_LINK_LIBRARIES "Halide::Halide;absl::status;absl::statusor;absl::strings")
  add_library(Kiln::gen_main STATIC IMPORTED)
  set_target_properties(Kiln::gen_main PROPERTIES
    IMPORTED_LOCATION "${_kiln_libdir}/libkiln_gen_main.a"
    INTERFACE_LINK_LIBRARIES "Kiln::compiler;absl::flags;absl::flags_parse")
endif()

set(KILN_MODELS_DIR "${_kiln_prefix}/share/kiln/models")
set(KILN_SCHEDULE manual CACHE STRING "Default schedule of kiln_add_model")
set(KILN_TARGET host CACHE STRING "Halide target of the generated code (host or a target string)")
set(KILN_GENERATED_DIR "${CMAKE_BINARY_DIR}/kiln_generated" CACHE PATH "Where compiled models land")
include("${CMAKE_CURRENT_LIST_DIR}/KilnModel.cmake")
