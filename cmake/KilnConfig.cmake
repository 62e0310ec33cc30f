# The installed Kiln package. find_package(Kiln) defines
#   Kiln::core      the runtime an application links to embed a compiled model
#                   (runtime/api/trainer.h): no Halide or LLVM, at build time or at run time;
#   Kiln::compiler, Kiln::gen_main
#                   the DSL compiler and generator main, for the generators kiln_add_model builds;
#   kiln_add_model  compiles a model definition into the object library kiln_model_<name>;
#   KILN_MODELS_DIR the model zoo's definitions (lenet5.cpp, resnet.cpp, ...).
# KILN_TARGET defaults to host.
include(CMakeFindDependencyMacro)
find_dependency(Threads)
find_dependency(ZLIB)
find_dependency(absl)
find_dependency(fmt)
find_dependency(Halide)  # Only the generators link it.

get_filename_component(_kiln_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(_kiln_libdir "${_kiln_prefix}/lib/kiln")

# Halide's package, which the generators need, loads LLVM's, and that runs C compile checks.
get_property(_kiln_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
if(NOT "C" IN_LIST _kiln_languages)
  message(FATAL_ERROR "Kiln: enable C as well as C++ before find_package(Kiln), e.g. "
                      "project(app LANGUAGES C CXX)")
endif()

set(KILN_SCHEDULE manual CACHE STRING "Default schedule of kiln_add_model")
set(KILN_TARGET host CACHE STRING
    "Halide target of the generated code (host or a target string)")
set(KILN_GENERATED_DIR "${CMAKE_BINARY_DIR}/kiln_generated" CACHE PATH "Where compiled models land")
set(KILN_MODELS_DIR "${_kiln_prefix}/share/kiln/models")
# The package's Halide runtime and optimizers serve when KILN_TARGET resolves, on this machine,
# to the target they were compiled for; "host" on another CPU may not.
file(STRINGS "${_kiln_libdir}/target.txt" _kiln_package_target LIMIT_COUNT 1)
execute_process(COMMAND "${_kiln_prefix}/bin/kiln-gen" --print_target "${KILN_TARGET}"
                OUTPUT_VARIABLE _kiln_target OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_VARIABLE _kiln_target_error RESULT_VARIABLE _kiln_target_result)
if(NOT _kiln_target_result EQUAL 0)
  message(FATAL_ERROR "Kiln: KILN_TARGET '${KILN_TARGET}': ${_kiln_target_error}")
endif()

if(NOT TARGET Kiln::core)
  # The Halide runtime and the optimizers: the package's, or compiled by the installed kiln-gen
  # when KILN_TARGET names another target (a lower x86-64 feature set for distributable
  # binaries, say), so that no kernel needs more than the target has.
  add_library(kiln_target_kernels INTERFACE)
  if(_kiln_target STREQUAL _kiln_package_target)
    target_link_libraries(kiln_target_kernels INTERFACE "${_kiln_libdir}/kiln_optimizers.a"
                          "${_kiln_libdir}/halide_runtime.a")
  else()
    set(_kiln_kernels "${KILN_GENERATED_DIR}/kiln_optimizers.a"
                      "${KILN_GENERATED_DIR}/halide_runtime.a")
    add_custom_command(
      OUTPUT ${_kiln_kernels}
      COMMAND "${_kiln_prefix}/bin/kiln-gen" --optimizers "${KILN_GENERATED_DIR}/kiln_optimizers"
              --target "${KILN_TARGET}"
      COMMAND "${_kiln_prefix}/bin/kiln-gen" --runtime "${KILN_GENERATED_DIR}/halide_runtime"
              --target "${KILN_TARGET}"
      COMMENT "Compiling Kiln's optimizers and the Halide runtime for ${KILN_TARGET}"
      VERBATIM)
    add_custom_target(kiln_target_kernel_files DEPENDS ${_kiln_kernels})
    add_dependencies(kiln_target_kernels kiln_target_kernel_files)
    target_link_libraries(kiln_target_kernels INTERFACE ${_kiln_kernels})
  endif()
  target_link_libraries(kiln_target_kernels INTERFACE Threads::Threads ${CMAKE_DL_LIBS})

  add_library(Kiln::core STATIC IMPORTED)
  set_target_properties(Kiln::core PROPERTIES
    IMPORTED_LOCATION "${_kiln_libdir}/libkiln_core.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_kiln_prefix}/include/kiln"
    INTERFACE_LINK_LIBRARIES "absl::status;absl::statusor;absl::strings;absl::str_format;\
fmt::fmt;ZLIB::ZLIB;kiln_target_kernels")
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

include("${CMAKE_CURRENT_LIST_DIR}/KilnModel.cmake")
