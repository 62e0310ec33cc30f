/** \file
 * Model specs: a line-based text form of a Kiln model, for test cases that a Python script
 * (tools/make_parity_reference.py) and C++ tests both read. The script stores each case's spec
 * in the metadata of its reference file, so one text defines the model on both sides.
 *
 *   absl::StatusOr<kiln::Model> model = kiln::BuildModelFromSpec(
 *       "input channels=3 height=7 width=9\n"
 *       "conv2d name=conv out_channels=4 kernel_size=3 stride=2 padding=1\n"
 *       "relu\n"
 *       "flatten\n"
 *       "dense name=fc out_features=5\n"
 *       "cross_entropy_loss num_classes=5\n",
 *       2);  // batch size
 *
 * Grammar. One statement per line: an op followed by key=value fields separated by spaces.
 * '#' starts a comment; blank lines are ignored. Ops, keys and defaults are the ModelBuilder
 * calls of compiler/model.h with their argument names:
 *
 *   model name=N                        the model's name (default "spec"); before the input
 *   input channels=C height=H width=W   or: input features=F
 *   conv2d name= out_channels= kernel_size= [stride=1] [padding=0] [bias=true] [dilation=1]
 *          [groups=1]
 *   relu | sigmoid | tanh | adaptive_avg_pool2d | flatten
 *   leaky_relu [negative_slope=0.01]
 *   max_pool2d kernel_size= [stride=kernel_size] [padding=0] [ceil_mode=false]
 *   avg_pool2d kernel_size= [stride=kernel_size] [padding=0] [ceil_mode=false]
 *              [count_include_pad=true]
 *   dense name= out_features= [bias=true]
 *   add a=LAYER b=LAYER
 *   concat from=LAYER,LAYER,...
 *   dropout [p=0.5]
 *   batch_norm2d name= [eps=1e-5] [momentum=0.1]     (batch_norm1d likewise)
 *   cross_entropy_loss num_classes= [label_smoothing=0]
 *   mse_loss | l1_loss | bce_with_logits_loss [target=data]   target=input: an autoencoder
 *   begin_block name=N    ...    end_block
 *
 * Every layer but input, add and concat reads `from=LAYER`, which defaults to the layer of the
 * line before. Layers are named as ModelBuilder names them. conv2d, dense and batch_norm take
 * `name=`. Every other op gets the automatic name `<op><count>`, where the count runs over the
 * layers of that op so far (relu1, relu2, add1, ...). The input is "input" and the loss "loss".
 * Such a layer may repeat its automatic name as `name=` for readability. Integers are decimal,
 * floats are read as float (absl::SimpleAtof), and booleans are true, false, 1 or 0.
 */
#ifndef KILN_TESTS_MODEL_SPEC_H_
#define KILN_TESTS_MODEL_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "compiler/model.h"

namespace kiln {

/// Builds the model that `spec` describes for batches of `batch` samples. Returns
/// InvalidArgument naming the line for a syntax error (unknown op or key, a missing required
/// key, an invalid value, an undefined input layer), and ModelBuilder's error for an invalid
/// model.
absl::StatusOr<Model> BuildModelFromSpec(const std::string& spec, int batch);

}  // namespace kiln

#endif  // KILN_TESTS_MODEL_SPEC_H_
