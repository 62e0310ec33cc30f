# kiln_add_model(NAME <name> SOURCES <files...> [MODEL <definition>]
#                [SCHEDULE manual|li2018|mullapudi2016|adams2019] [BATCH_SIZE <n>]
#                [INPUT <CxHxW or F>] [CLASSES <n>] [FREEZE <layer or block>])
#
# Builds a generator for the model defined in SOURCES, runs it at build time, and defines the
# object library kiln_model_<name> that registers the compiled model with the runtime and
# provides <name>_trainer.h (runtime/api/trainer.h). MODEL
# names the registered definition when it differs from NAME (e.g. NAME resnet18_fmnist MODEL
# resnet18 INPUT 1x28x28 CLASSES 10). FREEZE compiles a transfer-learning variant whose layers
# up to and including the named one get no gradients (kiln-gen --freeze). The model is
# regenerated only when its sources or the compiler change.
function(kiln_add_model)
  cmake_parse_arguments(ARG "" "NAME;MODEL;SCHEDULE;BATCH_SIZE;INPUT;CLASSES;FREEZE" "SOURCES" ${ARGN})
  if(NOT ARG_NAME OR NOT ARG_SOURCES)
    message(FATAL_ERROR "kiln_add_model: NAME and SOURCES are required")
  endif()
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kiln_add_model(${ARG_NAME}): unknown arguments "
                        "'${ARG_UNPARSED_ARGUMENTS}'; "
                        "the keywords are NAME, SOURCES, MODEL, SCHEDULE, BATCH_SIZE, INPUT, "
                        "CLASSES and FREEZE")
  endif()
  # The name becomes C and C++ identifiers in <name>_trainer.h.
  if(NOT ARG_NAME MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "kiln_add_model: NAME '${ARG_NAME}' is not an identifier; use letters, "
                        "digits and '_', starting with a letter (e.g. my_model)")
  endif()
  if(NOT ARG_SCHEDULE)
    set(ARG_SCHEDULE ${KILN_SCHEDULE})
  endif()
  if(NOT DEFINED ARG_BATCH_SIZE)
    set(ARG_BATCH_SIZE 64)
  elseif(NOT ARG_BATCH_SIZE MATCHES "^[1-9][0-9]*$")
    message(FATAL_ERROR "kiln_add_model(${ARG_NAME}): BATCH_SIZE '${ARG_BATCH_SIZE}' is not a "
                        "positive integer")
  endif()
  if(DEFINED ARG_CLASSES AND NOT ARG_CLASSES MATCHES "^[1-9][0-9]*$")
    message(FATAL_ERROR "kiln_add_model(${ARG_NAME}): CLASSES '${ARG_CLASSES}' is not a "
                        "positive integer")
  endif()
  if(NOT ARG_MODEL)
    set(ARG_MODEL ${ARG_NAME})
  endif()
  set(options)
  if(ARG_INPUT)
    list(APPEND options --input ${ARG_INPUT})
  endif()
  if(ARG_CLASSES)
    list(APPEND options --classes ${ARG_CLASSES})
  endif()
  if(ARG_FREEZE)
    list(APPEND options --freeze ${ARG_FREEZE})
  endif()

  set(generator kiln-gen-${ARG_NAME})
  add_executable(${generator} ${ARG_SOURCES})
  target_link_libraries(${generator} PRIVATE Kiln::gen_main)

  set(dir ${KILN_GENERATED_DIR}/${ARG_NAME})
  set(libraries ${dir}/${ARG_NAME}_kernels.a)
  add_custom_command(
    OUTPUT ${libraries} ${dir}/${ARG_NAME}_kernels.h ${dir}/${ARG_NAME}_model.cpp
           ${dir}/${ARG_NAME}_trainer.h
    COMMAND ${generator} --model ${ARG_MODEL} --name ${ARG_NAME} --schedule ${ARG_SCHEDULE}
            --output_dir ${dir} --batch_size ${ARG_BATCH_SIZE} --target ${KILN_TARGET} ${options}
    DEPENDS ${generator}
    COMMENT "Compiling model ${ARG_NAME} (${ARG_SCHEDULE} schedule, batch ${ARG_BATCH_SIZE})"
    VERBATIM)

  # An object library, so the static registration in <name>_model.cpp is always linked. Code
  # that includes <name>_trainer.h needs only the runtime core: no Halide headers.
  add_library(kiln_model_${ARG_NAME} OBJECT ${dir}/${ARG_NAME}_model.cpp)
  target_include_directories(kiln_model_${ARG_NAME} PUBLIC ${dir})
  target_link_libraries(kiln_model_${ARG_NAME} PUBLIC Kiln::core ${libraries})
endfunction()
