#!/usr/bin/python3
"""Writes tests/data/parity/<case>.safetensors: PyTorch's values for every op and model of Kiln.

Each case is a small model given as a spec, the line-based text format that tests/model_spec.h
documents and parses for C++. This script parses the same spec, computes one training step (or
one evaluation) of it with PyTorch, and stores the results. tests/parity_test.cpp builds the
models without blocks from their specs and compares Kiln's lowered pipelines with the op cases.
The model cases are for a test of the compiled models: lenet5, resnet20, mlp_regression and
denoising_autoencoder at their default input sizes, resnet18/34/50/101/152 and alexnet at 3×64×64
with batch 2 and 10 classes (alexnet in eval mode, see below).

Run it with a Python that has torch (on Debian 12, /usr/bin/python3 with the python3-torch
package). It needs only torch and numpy, and writes the safetensors format with tools/safetensors_io.py:

    /usr/bin/python3 tools/make_parity_reference.py            # every case
    /usr/bin/python3 tools/make_parity_reference.py --case conv_groups2 --case resnet18
    /usr/bin/python3 tools/make_parity_reference.py --check-torchvision

With --check-torchvision it also loads the same weights into torchvision's ResNets (when
torchvision is installed) and checks that they compute the same step. Two runs with the same
torch version write the same bytes.

Parameters, running statistics, inputs and targets are not random draws but a counter-based hash
of (tensor name, element index), implemented identically in tests/reference_weights.h, so a C++
test regenerates the weights of a model case without storing them:
    u(name, i)     = (SplitMix64 stream seeded with FNV-1a-64(name), element i) >> 40, times 2^-24,
                     a float in [0, 1) with 24 bits, exact in float32
    conv2d, dense  weight: sqrt(6 / fan_in) (2u − 1), He's uniform initialization, which keeps
                   the scale of activations through ReLU layers, so deep models without
                   BatchNorm (AlexNet) have logits of order 1; bias: (2u − 1) / sqrt(fan_in);
                   fan_in = C_in / groups · k² or in_features
    batch_norm     weight: 1 + 0.2 (2u − 1); bias: 0.1 (2u − 1)
    running_mean   0.1 (2u − 1); running_var: 0.5 + u
    input          2u − 1 of "<case>/input"; class labels: the 64-bit hash of "<case>/targets"
                   modulo the class count; regression targets 2u − 1, BCE targets u
Each value is computed in float64 and rounded once to float32.

The arithmetic runs in float64 on those float32 values, and the results are rounded to float32
only when written. torch.set_num_threads(1) fixes the summation order.

File format (safetensors; every tensor F32 unless noted; PyTorch shapes, row-major):
  metadata
    spec        the model, one layer per line (tests/model_spec.h)
    batch       the batch size
    mode        "train": BatchNorm normalizes with the batch's statistics and updates the running
                ones; "eval": BatchNorm uses the running statistics and dropout is the identity.
                Loss and gradients are stored in both modes.
    gradients   "full" (op cases) or "sampled" (model cases), see below
    case, torch_version, made_by
  input            [N, C, H, W] or [N, F]
  targets          I32 [N] class labels for cross_entropy_loss, or F32 shaped like `output` for
                   the regression losses; absent when the loss reconstructs the input
  output           the prediction: the loss layer's input
  loss             [] the mean loss
  full:
    param.<name>       every parameter before the step (equal to the hash formula)
    buffer.<name>      every running statistic before the step (likewise)
    grad.input         d loss / d input. Where the loss reconstructs the input, the target
                       counts as a constant (x.detach()), so this is the gradient through the
                       layers only, as Kiln computes it
    grad.<name>        d loss / d parameter, for every parameter
    buffer_after.<name>  running statistics after the training forward (equal to buffer.<name>
                       in eval mode)
  sampled (the model cases, whose tensors would take megabytes; they store no param.* or
  buffer.*, which tests/reference_weights.h regenerates):
    index.<name>       I32 [k]: flat indices into tensor <name> (a parameter, a buffer or
                       "input"), k = min(32, numel), distinct, ascending, from the hash of
                       "<name>/sample"
    grad_stats.<name>  [3]: the sum and the L2 norm of the whole gradient, for each parameter
                       and for "input", and the float32 error of that gradient (below)
    grad_sample.<name> [k]: the gradient at index.<name>
    grad_spread.<name> [k]: the float32 spread at index.<name> (below)
    buffer_after_stats.<name>, buffer_after_sample.<name>, buffer_after_spread.<name>: likewise
                       for each running statistic after the training forward
    eval_output, eval_loss  train cases: the prediction and loss in eval mode, before the step
    metadata float32_runs, float32_output_error, float32_loss_error: the number of float32 runs
                       and the float32 errors of output and loss
    metadata scaled_weights (some cases): "<suffix> <factor>": every tensor whose name ends with
                       "." + suffix starts at factor times its hashed value
    metadata input_salt, input_salt_errors (some cases): which input was chosen (below)

The float32 error of a result r is the largest ||r32 − r||₂ / ||r||₂ over FLOAT32_RUNS runs of
the same step in PyTorch's float32: one from the stored input, the others from that input with
each element moved by at most one unit in the last place, which reroutes every later rounding.
Its spread at an element is the largest |r32 − r| there. Both estimate how far float32 round-off
alone moves a result, so a tolerance for Kiln's float32 values.

It matters for the deep ResNets in train mode. A pre-ReLU value within round-off of 0 takes
either sign in float32, and BatchNorm with batch statistics spreads that one pixel's switched
gradient over its channel and every earlier layer: each gradient moves by about 1/sqrt(values
in the layer) per flip. With these hashed weights unscaled, PyTorch's float32 gradients moved
by up to 3e-5 (resnet34), 3e-4 (resnet50) and 1e-1 (resnet152) from float64 (torch 1.13). What
flips depends on the summation order, so it differs between any two float32 implementations.
Two choices make those cases better conditioned:
  - The last BatchNorm of each residual branch starts at 0.25 times its hashed weight
    (scaled_weights), as residual networks are often started near the identity (torchvision's
    zero_init_residual starts it at 0). Activations then grow more slowly with depth, and so does
    round-off (PyTorch's float32 logits of resnet152 move by 2e-5 instead of 1e-3).
  - Of input_salts inputs ("<case>/input", then "<case>/input/<salt>"), the case keeps the one
    with the smallest largest float32 error of a gradient; input_salt_errors lists them all.
    resnet34 and resnet50 then stay below 2e-5; resnet101 and resnet152 still flip in every
    input tried (2e-2 and 4e-2), and their tests check them within that.
In eval mode the same models stay near 1e-6. The other models stay below 4e-5.

Dropout in training draws its mask from Kiln's own hash, which PyTorch's generator cannot
reproduce, so train cases use dropout only with p = 0; a dropout with p > 0 appears only in
eval cases (alexnet among them).
"""

import argparse
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from safetensors_io import write_safetensors

SAMPLES = 32  # Elements per tensor in the sampled format.

# ---- the hash of tests/reference_weights.h ------------------------------------------------------

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def fnv1a64(text):
    """Returns the 64-bit FNV-1a hash of the UTF-8 bytes of `text`."""
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * FNV_PRIME) & MASK64
    return h


def hash_bits(name, count):
    """Returns elements 0..count-1 of the SplitMix64 stream seeded with fnv1a64(name), uint64."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(
            GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_uniform(name, count):
    """Returns u(name, i) for i < count: float64 values in [0, 1) with 24 bits each."""
    return (hash_bits(name, count) >> np.uint64(40)).astype(np.float64) * 2.0**-24


def reference_value(name, shape, fan_in, scaled=None):
    """Returns the float32 initial value of parameter or buffer `name` (see the file comment).
    `scaled` is the case's (suffix, factor) or None."""
    count = int(np.prod(shape, dtype=np.int64))
    u = hash_uniform(name, count)
    suffix = name.rsplit(".", 1)[-1]
    if suffix == "running_mean":
        value = 0.1 * (2.0 * u - 1.0)
    elif suffix == "running_var":
        value = 0.5 + u
    elif fan_in > 0 and suffix == "weight":
        value = math.sqrt(6.0 / fan_in) * (2.0 * u - 1.0)
    elif fan_in > 0:
        value = (1.0 / math.sqrt(fan_in)) * (2.0 * u - 1.0)
    elif suffix == "weight":
        value = 1.0 + 0.2 * (2.0 * u - 1.0)
    else:
        value = 0.1 * (2.0 * u - 1.0)
    if scaled is not None and name.endswith("." + scaled[0]):
        value = value * scaled[1]
    return value.astype(np.float32).reshape(shape)


def sample_indices(name, numel):
    """Returns the sorted distinct flat indices stored in index.<name>."""
    if numel <= SAMPLES:
        return np.arange(numel, dtype=np.int64)
    chosen = set()
    drawn = 0
    while len(chosen) < SAMPLES:
        for bits in hash_bits(f"{name}/sample", drawn + 4 * SAMPLES)[drawn:]:
            chosen.add(int(bits) % numel)
            if len(chosen) == SAMPLES:
                break
        drawn += 4 * SAMPLES
    return np.array(sorted(chosen), dtype=np.int64)


# ---- the spec format ----------------------------------------------------------------------------
# tests/model_spec.h is the reference for the grammar; the tables here must agree with it.

REQUIRED = object()
NAMED_OPS = ("conv2d", "dense", "batch_norm2d", "batch_norm1d")
REGRESSION_LOSSES = ("mse_loss", "l1_loss", "bce_with_logits_loss")
LOSSES = ("cross_entropy_loss",) + REGRESSION_LOSSES

# Attributes of each op: key -> (type, default). Every layer op also takes `name` and, except
# input, add and concat, `from`.
ATTRIBUTES = {
    "input": {"channels": (int, "0"), "height": (int, "0"), "width": (int, "0"),
              "features": (int, "0")},
    "conv2d": {"out_channels": (int, REQUIRED), "kernel_size": (int, REQUIRED),
               "stride": (int, "1"), "padding": (int, "0"), "bias": (bool, "true"),
               "dilation": (int, "1"), "groups": (int, "1")},
    "relu": {}, "sigmoid": {}, "tanh": {}, "adaptive_avg_pool2d": {}, "flatten": {},
    "leaky_relu": {"negative_slope": (float, "0.01")},
    "max_pool2d": {"kernel_size": (int, REQUIRED), "stride": (int, "0"), "padding": (int, "0"),
                   "ceil_mode": (bool, "false")},
    "avg_pool2d": {"kernel_size": (int, REQUIRED), "stride": (int, "0"), "padding": (int, "0"),
                   "ceil_mode": (bool, "false"), "count_include_pad": (bool, "true")},
    "dense": {"out_features": (int, REQUIRED), "bias": (bool, "true")},
    "add": {},
    "concat": {},
    "dropout": {"p": (float, "0.5")},
    "batch_norm2d": {"eps": (float, "1e-5"), "momentum": (float, "0.1")},
    "batch_norm1d": {"eps": (float, "1e-5"), "momentum": (float, "0.1")},
    "cross_entropy_loss": {"num_classes": (int, REQUIRED), "label_smoothing": (float, "0")},
    "mse_loss": {"target": (str, "data")},
    "l1_loss": {"target": (str, "data")},
    "bce_with_logits_loss": {"target": (str, "data")},
}


def to_float32(text):
    """Returns the float32 value that C++'s absl::SimpleAtof gives for `text`, as a float."""
    return float(np.float32(text))


def parse_value(kind, text, where):
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: '{text}' is not an integer") from None
    if kind is float:
        try:
            return to_float32(text)
        except ValueError:
            raise ValueError(f"{where}: '{text}' is not a number") from None
    if kind is bool:
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValueError(f"{where}: '{text}' is not true, false, 1 or 0")
    return text


class Layer:
    """One parsed layer: op, name, input layer names, attributes, enclosing block."""

    def __init__(self, op, name, inputs, attrs, block):
        self.op, self.name, self.inputs, self.attrs, self.block = op, name, inputs, attrs, block


def parse_spec(text):
    """Parses a spec into (model name, [Layer]) with Kiln's automatic names."""
    model_name = "spec"
    layers, block = [], None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        op, *fields = line.split()
        where = f"spec line {number} ({op})"
        values = {}
        for field in fields:
            key, sep, value = field.partition("=")
            if not sep or not key or key in values:
                raise ValueError(f"{where}: '{field}' is not a new key=value")
            values[key] = value
        if op == "model":
            if layers or "name" not in values:
                raise ValueError(f"{where}: needs name= and must come before every layer")
            model_name = values.pop("name")
        elif op == "begin_block":
            if "name" not in values or block is not None:
                raise ValueError(f"{where}: needs name= and must not be inside another block")
            block = values.pop("name")
        elif op == "end_block":
            if block is None:
                raise ValueError(f"{where}: no block is open")
            block = None
        elif op in ATTRIBUTES:
            layers.append(parse_layer(op, values, layers, block, where))
        else:
            raise ValueError(f"{where}: unknown op")
        if values:
            raise ValueError(f"{where}: unknown keys {sorted(values)}")
    return model_name, layers


def parse_layer(op, values, layers, block, where):
    """Parses one layer line; `values` loses the keys it uses."""
    if op in LOSSES:
        automatic = "loss"
    elif op == "input":
        automatic = "input"
    else:
        automatic = f"{op}{1 + sum(layer.op == op for layer in layers)}"
    if op in NAMED_OPS:
        if "name" not in values:
            raise ValueError(f"{where}: name= is required")
        name = values.pop("name")
    else:
        name = values.pop("name", automatic)
        if name != automatic:
            raise ValueError(f"{where}: name '{name}' differs from the automatic name {automatic}")

    known = {layer.name for layer in layers}
    if op == "input":
        inputs = []
    elif op == "add":
        inputs = [values.pop("a"), values.pop("b")]
    elif op == "concat":
        inputs = values.pop("from").split(",")
    else:
        inputs = [values.pop("from", layers[-1].name if layers else "")]
    for source in inputs:
        if source not in known:
            raise ValueError(f"{where}: input layer '{source}' is not defined above")

    attrs = {}
    for key, (kind, default) in ATTRIBUTES[op].items():
        if key not in values and default is REQUIRED:
            raise ValueError(f"{where}: {key}= is required")
        attrs[key] = parse_value(kind, values.pop(key, default), where)
    if op == "input" and not (attrs["features"] > 0) == (attrs["channels"] == 0):
        raise ValueError(f"{where}: give either features= or channels=, height= and width=")
    if op in REGRESSION_LOSSES and attrs["target"] not in ("data", "input"):
        raise ValueError(f"{where}: target must be data or input")
    if op in ("max_pool2d", "avg_pool2d") and attrs["stride"] == 0:
        attrs["stride"] = attrs["kernel_size"]
    return Layer(op, name, inputs, attrs, block)


class SpecWriter:
    """Writes a spec line by line and returns each layer's name, automatic ones included, so the
    case definitions below read like the C++ DSL."""

    def __init__(self, model_name):
        self.lines = [f"model name={model_name}"]
        self.counts = {}
        self.last = None

    def text(self):
        return "\n".join(self.lines) + "\n"

    def layer(self, op, name=None, x=None, **attrs):
        if name is None:
            self.counts[op] = self.counts.get(op, 0) + 1
            name = "loss" if op in LOSSES else f"{op}{self.counts[op]}"
            fields = [op]
        else:
            fields = [op, f"name={name}"]
        if x is not None and x != self.last:
            fields.append(f"from={x}")
        for key, value in attrs.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            fields.append(f"{key}={value}")
        self.lines.append(" ".join(fields))
        self.last = name
        return name

    def input(self, **shape):
        self.lines.append("input " + " ".join(f"{k}={v}" for k, v in shape.items()))
        self.last = "input"
        return "input"

    def add(self, a, b):
        self.counts["add"] = self.counts.get("add", 0) + 1
        self.lines.append(f"add a={a} b={b}")
        self.last = f"add{self.counts['add']}"
        return self.last

    def concat(self, xs):
        self.counts["concat"] = self.counts.get("concat", 0) + 1
        self.lines.append(f"concat from={','.join(xs)}")
        self.last = f"concat{self.counts['concat']}"
        return self.last

    def begin_block(self, name):
        self.lines.append(f"begin_block name={name}")

    def end_block(self):
        self.lines.append("end_block")


# ---- shapes, parameters and the PyTorch computation ----------------------------------------------


def pooled_size(size, kernel, stride, padding, ceil_mode):
    """PyTorch's pooling output size (as compiler/model.cpp computes it)."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class SpecModel:
    """A parsed spec with its per-sample shapes, parameters and buffers, in Kiln's order."""

    def __init__(self, text):
        self.text = text
        self.name, self.layers = parse_spec(text)
        self.shapes = {}
        self.params = []   # (name, shape, fan_in)
        self.buffers = []  # (name, shape)
        for layer in self.layers:
            self.shapes[layer.name] = self.infer(layer)

    def infer(self, layer):
        a = layer.attrs
        ins = [self.shapes[name] for name in layer.inputs]
        if layer.op == "input":
            if a["features"]:
                return (a["features"],)
            return (a["channels"], a["height"], a["width"])
        x = ins[0] if ins else None
        if layer.op == "conv2d":
            c, h, w = x
            k, d, p, s, g = a["kernel_size"], a["dilation"], a["padding"], a["stride"], a["groups"]
            fan_in = c // g * k * k
            self.params.append((f"{layer.name}.weight", (a["out_channels"], c // g, k, k), fan_in))
            if a["bias"]:
                self.params.append((f"{layer.name}.bias", (a["out_channels"],), fan_in))
            extent = d * (k - 1) + 1
            return (a["out_channels"], (h + 2 * p - extent) // s + 1, (w + 2 * p - extent) // s + 1)
        if layer.op in ("max_pool2d", "avg_pool2d"):
            c, h, w = x
            args = (a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"])
            return (c, pooled_size(h, *args), pooled_size(w, *args))
        if layer.op == "adaptive_avg_pool2d":
            return (x[0], 1, 1)
        if layer.op == "flatten":
            return (int(np.prod(x)),)
        if layer.op == "dense":
            self.params.append((f"{layer.name}.weight", (a["out_features"], x[0]), x[0]))
            if a["bias"]:
                self.params.append((f"{layer.name}.bias", (a["out_features"],), x[0]))
            return (a["out_features"],)
        if layer.op == "concat":
            return (sum(s[0] for s in ins),) + ins[0][1:]
        if layer.op in ("batch_norm2d", "batch_norm1d"):
            self.params += [(f"{layer.name}.weight", (x[0],), 0), (f"{layer.name}.bias", (x[0],), 0)]
            self.buffers += [(f"{layer.name}.running_mean", (x[0],)),
                             (f"{layer.name}.running_var", (x[0],))]
            return x
        if layer.op in LOSSES:
            return ()
        return x  # Elementwise ops and add.

    @property
    def loss(self):
        return self.layers[-1]

    @property
    def prediction_shape(self):
        return self.shapes[self.loss.inputs[0]]

    def forward(self, x, params, buffers, training):
        """Returns the prediction for input `x` (float64). BatchNorm in training updates the
        tensors in `buffers` in place, as torch.nn.BatchNorm2d does."""
        values = {}
        for layer in self.layers:
            if layer.op in LOSSES:
                break
            values[layer.name] = self.apply(layer, [values.get(n) for n in layer.inputs], x,
                                            params, buffers, training)
            got = tuple(values[layer.name].shape[1:])
            if got != self.shapes[layer.name]:
                sys.exit(f"{layer.name}: PyTorch computes shape {got}, the spec infers "
                         f"{self.shapes[layer.name]}")
        return values[self.loss.inputs[0]]

    def apply(self, layer, ins, x, params, buffers, training):
        a, name = layer.attrs, layer.name
        if layer.op == "input":
            return x
        v = ins[0]
        if layer.op == "conv2d":
            return F.conv2d(v, params[f"{name}.weight"], params.get(f"{name}.bias"), a["stride"],
                            a["padding"], a["dilation"], a["groups"])
        if layer.op == "relu":
            return F.relu(v)
        if layer.op == "leaky_relu":
            return F.leaky_relu(v, a["negative_slope"])
        if layer.op == "sigmoid":
            return torch.sigmoid(v)
        if layer.op == "tanh":
            return torch.tanh(v)
        if layer.op == "max_pool2d":
            return F.max_pool2d(v, a["kernel_size"], a["stride"], a["padding"],
                                ceil_mode=a["ceil_mode"])
        if layer.op == "avg_pool2d":
            return F.avg_pool2d(v, a["kernel_size"], a["stride"], a["padding"],
                                ceil_mode=a["ceil_mode"], count_include_pad=a["count_include_pad"])
        if layer.op == "adaptive_avg_pool2d":
            return F.adaptive_avg_pool2d(v, 1)
        if layer.op == "flatten":
            return torch.flatten(v, 1)
        if layer.op == "dense":
            return F.linear(v, params[f"{name}.weight"], params.get(f"{name}.bias"))
        if layer.op == "add":
            return ins[0] + ins[1]
        if layer.op == "concat":
            return torch.cat(ins, dim=1)
        if layer.op == "dropout":
            if training and a["p"] > 0:
                sys.exit(f"{name}: dropout with p > 0 in training draws a mask PyTorch cannot "
                         "reproduce; use p=0 or an eval case")
            return v
        if layer.op in ("batch_norm2d", "batch_norm1d"):
            return F.batch_norm(v, buffers[f"{name}.running_mean"],
                                buffers[f"{name}.running_var"], params[f"{name}.weight"],
                                params[f"{name}.bias"], training, a["momentum"], a["eps"])
        sys.exit(f"{name}: op {layer.op} has no PyTorch counterpart here")

    def loss_value(self, prediction, x, targets):
        a = self.loss.attrs
        if self.loss.op == "cross_entropy_loss":
            return F.cross_entropy(prediction, targets, label_smoothing=a["label_smoothing"])
        # A target that is the input is data, not a path of the gradient, as Kiln's lowering
        # reads it from its own argument.
        target = x.detach() if a["target"] == "input" else targets
        if self.loss.op == "mse_loss":
            return F.mse_loss(prediction, target)
        if self.loss.op == "l1_loss":
            return F.l1_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


# ---- one case -----------------------------------------------------------------------------------


class Case:
    """A reference case: a spec, a batch size, a mode and the storage format. `scaled_weights`
    is a (suffix, factor) pair or None, and `input_salts` the number of inputs to choose from
    (see the file comment)."""

    def __init__(self, name, spec, batch, mode="train", sampled=False, scaled_weights=None,
                 input_salts=1):
        self.name, self.spec, self.batch, self.mode, self.sampled = name, spec, batch, mode, sampled
        self.scaled_weights, self.input_salts = scaled_weights, input_salts


def make_data(case, model, salt=0):
    """Returns the float32 input and the targets (int32 labels, float32 tensor, or None)."""
    shape = (case.batch,) + model.shapes["input"]
    count = int(np.prod(shape))
    input_name = f"{case.name}/input" if salt == 0 else f"{case.name}/input/{salt}"
    x = (2.0 * hash_uniform(input_name, count) - 1.0).astype(np.float32).reshape(shape)
    loss = model.loss
    if loss.op == "cross_entropy_loss":
        bits = hash_bits(f"{case.name}/targets", case.batch)
        return x, (bits % np.uint64(loss.attrs["num_classes"])).astype(np.int32)
    if loss.attrs["target"] == "input":
        return x, None
    shape = (case.batch,) + model.prediction_shape
    u = hash_uniform(f"{case.name}/targets", int(np.prod(shape))).reshape(shape)
    if loss.op == "bce_with_logits_loss":
        return x, u.astype(np.float32)
    return x, (2.0 * u - 1.0).astype(np.float32)


def compute_step(case, model, x32, targets, dtype, training):
    """Runs the case's forward pass, loss and backward pass in `dtype` from the float32 values.
    Returns the prediction, the loss, the gradients by name ("input" and each parameter) and the
    running statistics after the forward pass."""
    scaled = case.scaled_weights
    params = {name: torch.from_numpy(reference_value(name, shape, fan_in, scaled)).to(dtype)
              .requires_grad_() for name, shape, fan_in in model.params}
    buffers = {name: torch.from_numpy(reference_value(name, shape, 0, scaled)).to(dtype)
               for name, shape in model.buffers}
    x = torch.from_numpy(x32).to(dtype).requires_grad_()
    t = None
    if targets is not None:
        t = torch.from_numpy(targets)
        t = t.long() if targets.dtype == np.int32 else t.to(dtype)

    prediction = model.forward(x, params, buffers, training)
    loss = model.loss_value(prediction, x, t)
    names = ["input"] + [name for name, _, _ in model.params]
    grads = torch.autograd.grad(loss, [x] + [params[n] for n in names[1:]])
    return prediction.detach(), loss.detach(), dict(zip(names, grads)), buffers


def relative_error(approximate, exact):
    """Returns ||approximate − exact||₂ / ||exact||₂ in float64, or 0 where both are zero."""
    difference = (approximate.double() - exact).norm().item()
    norm = exact.norm().item()
    return difference / norm if norm > 0 else difference


FLOAT32_RUNS = 6  # Float32 steps per sampled case, from differently rounded inputs.


def float32_spread(case, model, x32, targets, training, exact):
    """Runs the case's step in float32 FLOAT32_RUNS times: once from `x32` and then from `x32`
    with each element moved by at most one unit in the last place (a hashed choice per run),
    which reroutes every later rounding. Returns, for each result of `exact` (the float64
    results as compute_step returns them, keyed "output", "loss", "grad.<name>" and
    "buffer_after.<name>"), the largest relative L2 error of a run and the largest absolute
    difference of a run per element."""
    errors, spreads = {}, {}
    for run in range(FLOAT32_RUNS):
        x = x32
        if run > 0:
            u = hash_uniform(f"{case.name}/float32_run/{run}", x32.size).reshape(x32.shape)
            x = (x32.astype(np.float64) * (1.0 + 2.0**-23 * (2.0 * u - 1.0))).astype(np.float32)
        prediction, loss, grad_of, buffers = compute_step(case, model, x, targets, torch.float32,
                                                          training)
        approximate = flatten_results(prediction, loss, grad_of, buffers)
        for key, value in exact.items():
            errors[key] = max(errors.get(key, 0.0), relative_error(approximate[key], value))
            difference = (approximate[key].double() - value).abs().reshape(-1)
            spreads[key] = difference if key not in spreads else torch.maximum(spreads[key],
                                                                               difference)
    return errors, spreads


def flatten_results(prediction, loss, grad_of, buffers):
    """Returns compute_step's results in one dict keyed as float32_spread documents."""
    results = {"output": prediction, "loss": loss}
    results.update({f"grad.{n}": g for n, g in grad_of.items()})
    results.update({f"buffer_after.{n}": b for n, b in buffers.items()})
    return results


def sampled_step(case, model, training, salt):
    """Computes the case's step in float64 from the input of `salt`, and its float32 spread.
    Returns the input, the targets, the float64 results, the errors and the spreads."""
    x32, targets = make_data(case, model, salt)
    result = compute_step(case, model, x32, targets, torch.float64, training)
    exact = flatten_results(*result)
    errors, spreads = float32_spread(case, model, x32, targets, training, exact)
    return x32, targets, result, errors, spreads


def run_case(case):
    """Computes the case. Returns the SpecModel, the arrays and metadata of its file, and the
    float64 results (buffers after the step, gradients, prediction, loss) with the input and
    targets they came from."""
    model = SpecModel(case.spec)
    training = case.mode == "train"
    metadata = {
        "case": case.name,
        "spec": case.spec,
        "batch": str(case.batch),
        "mode": case.mode,
        "gradients": "sampled" if case.sampled else "full",
        "torch_version": torch.__version__,
        "made_by": "tools/make_parity_reference.py: one step of the spec in PyTorch from hashed "
                   "weights and inputs, computed in float64 and stored as float32",
    }
    if case.scaled_weights is not None:
        metadata["scaled_weights"] = f"{case.scaled_weights[0]} {case.scaled_weights[1]!r}"

    if not case.sampled:
        x32, targets = make_data(case, model)
        prediction, loss, grad_of, buffers = compute_step(case, model, x32, targets,
                                                          torch.float64, training)
        arrays = {"input": x32, "output": f32(prediction), "loss": f32(loss)}
        if targets is not None:
            arrays["targets"] = targets
        for name, shape, fan_in in model.params:
            arrays[f"param.{name}"] = reference_value(name, shape, fan_in)
        for name, shape in model.buffers:
            arrays[f"buffer.{name}"] = reference_value(name, shape, 0)
        arrays.update({f"grad.{n}": f32(g) for n, g in grad_of.items()})
        arrays.update({f"buffer_after.{n}": f32(b) for n, b in buffers.items()})
        return model, arrays, metadata, (buffers, grad_of, prediction, loss, x32, targets)

    # Of the case's inputs, the one whose float32 runs stay closest to float64 (see the file
    # comment).
    best, scores = None, []
    for salt in range(case.input_salts):
        step = sampled_step(case, model, training, salt)
        score = max(e for key, e in step[3].items() if key.startswith("grad."))
        scores.append(f"{score:.2e}")
        if best is None or score < best[0]:
            best = (score, salt, step)
    _, salt, (x32, targets, result, errors, spreads) = best
    prediction, loss, grad_of, buffers = result
    if case.input_salts > 1:
        metadata["input_salt"] = str(salt)
        metadata["input_salt_errors"] = " ".join(scores)
    metadata["float32_runs"] = str(FLOAT32_RUNS)
    metadata["float32_output_error"] = f"{errors['output']:.3e}"
    metadata["float32_loss_error"] = f"{errors['loss']:.3e}"

    arrays = {"input": x32, "output": f32(prediction), "loss": f32(loss)}
    if targets is not None:
        arrays["targets"] = targets
    for name, g in grad_of.items():
        add_sampled(arrays, "grad", name, g, errors[f"grad.{name}"], spreads[f"grad.{name}"])
    for name, b in buffers.items():
        add_sampled(arrays, "buffer_after", name, b, errors[f"buffer_after.{name}"],
                    spreads[f"buffer_after.{name}"])
    if training:
        eval_prediction, eval_loss, _, _ = compute_step(case, model, x32, targets, torch.float64,
                                                        False)
        arrays["eval_output"] = f32(eval_prediction)
        arrays["eval_loss"] = f32(eval_loss)
    return model, arrays, metadata, (buffers, grad_of, prediction, loss, x32, targets)


def f32(tensor):
    # Not np.ascontiguousarray, which turns a scalar into shape [1].
    return np.array(tensor.detach().numpy(), dtype=np.float32, order="C")


def add_sampled(arrays, group, name, tensor, float32_error, spread):
    """Stores index.<name>, <group>_stats.<name> (sum, L2 norm, float32 error),
    <group>_sample.<name> and <group>_spread.<name> (`spread` at the sampled elements)."""
    flat = tensor.detach().reshape(-1)
    index = torch.from_numpy(sample_indices(name, flat.numel()))
    arrays[f"index.{name}"] = index.numpy().astype(np.int32)
    arrays[f"{group}_stats.{name}"] = np.array(
        [flat.sum().item(), flat.norm().item(), float32_error], dtype=np.float32)
    arrays[f"{group}_sample.{name}"] = f32(flat[index])
    arrays[f"{group}_spread.{name}"] = f32(spread[index])


# ---- the cases ----------------------------------------------------------------------------------


def head(s, x, classes=5, label_smoothing=None):
    """Ends a spec with flatten → dense "fc" → cross-entropy, the head of most op cases."""
    if not x.startswith("flatten"):
        x = s.layer("flatten", x=x)
    x = s.layer("dense", "fc", x, out_features=classes)
    extra = {} if label_smoothing is None else {"label_smoothing": label_smoothing}
    s.layer("cross_entropy_loss", x=x, num_classes=classes, **extra)
    return s.text()


def conv_case(name, batch, shape, **conv):
    s = SpecWriter(name)
    x = s.input(channels=shape[0], height=shape[1], width=shape[2])
    x = s.layer("conv2d", "conv", x, **conv)
    return Case(name, head(s, x), batch)


def unary_case(name, batch, shape, op, mode="train", **attrs):
    s = SpecWriter(name)
    x = s.input(channels=shape[0], height=shape[1], width=shape[2])
    x = s.layer(op, x=x, **attrs)
    return Case(name, head(s, x), batch, mode)


def op_cases():
    cases = [
        # conv2d: odd sizes, stride 2, padding, 1×1 kernels, dilation, groups, no bias.
        conv_case("conv_k3", 2, (3, 7, 9), out_channels=4, kernel_size=3),
        conv_case("conv_k3_s2_p1", 3, (3, 7, 9), out_channels=5, kernel_size=3, stride=2,
                  padding=1),
        conv_case("conv_k1_no_bias", 1, (4, 5, 7), out_channels=6, kernel_size=1, bias=False),
        conv_case("conv_k1_s2", 2, (4, 7, 7), out_channels=3, kernel_size=1, stride=2,
                  bias=False),
        conv_case("conv_k5_s3_p2", 1, (2, 8, 11), out_channels=3, kernel_size=5, stride=3,
                  padding=2),
        conv_case("conv_k2_even", 2, (3, 6, 6), out_channels=2, kernel_size=2, stride=2),
        conv_case("conv_dilation2", 2, (2, 9, 8), out_channels=3, kernel_size=3, padding=2,
                  dilation=2),
        conv_case("conv_groups2", 2, (4, 6, 7), out_channels=6, kernel_size=3, padding=1,
                  groups=2),
        conv_case("conv_depthwise_s2", 1, (4, 7, 7), out_channels=4, kernel_size=3, stride=2,
                  padding=1, groups=4, bias=False),
        conv_case("conv_depthwise_x2", 3, (3, 6, 5), out_channels=6, kernel_size=3, padding=1,
                  groups=3),
        # Pooling: floor and ceil_mode, padding, count_include_pad.
        unary_case("max_pool_k2", 2, (3, 7, 9), "max_pool2d", kernel_size=2),
        unary_case("max_pool_k3_s2_p1", 1, (2, 8, 7), "max_pool2d", kernel_size=3, stride=2,
                   padding=1),
        unary_case("max_pool_k3_s2_ceil", 3, (2, 8, 8), "max_pool2d", kernel_size=3, stride=2,
                   ceil_mode=True),
        # ceil_mode on 7×7 with padding 1: the last window would start in the right padding,
        # so PyTorch drops it (4 outputs, not 5).
        unary_case("max_pool_k2_p1_ceil", 2, (2, 7, 7), "max_pool2d", kernel_size=2, padding=1,
                   ceil_mode=True),
        unary_case("avg_pool_k2", 2, (3, 7, 9), "avg_pool2d", kernel_size=2),
        unary_case("avg_pool_k3_s2_p1", 1, (2, 8, 7), "avg_pool2d", kernel_size=3, stride=2,
                   padding=1),
        unary_case("avg_pool_k3_s2_p1_exclude_pad", 2, (2, 8, 7), "avg_pool2d", kernel_size=3,
                   stride=2, padding=1, count_include_pad=False),
        unary_case("avg_pool_k2_ceil", 3, (2, 7, 9), "avg_pool2d", kernel_size=2,
                   ceil_mode=True),
        unary_case("avg_pool_k3_s2_p1_ceil", 2, (2, 8, 8), "avg_pool2d", kernel_size=3, stride=2,
                   padding=1, ceil_mode=True),
        unary_case("avg_pool_k3_s2_p1_ceil_exclude_pad", 2, (2, 8, 8), "avg_pool2d",
                   kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        unary_case("adaptive_avg_pool", 3, (4, 5, 7), "adaptive_avg_pool2d"),
        # Activations on images.
        unary_case("relu", 2, (3, 5, 7), "relu"),
        unary_case("leaky_relu", 1, (3, 5, 7), "leaky_relu"),
        unary_case("leaky_relu_slope_0.2", 2, (3, 5, 7), "leaky_relu", negative_slope="0.2"),
        unary_case("sigmoid", 2, (3, 5, 7), "sigmoid"),
        unary_case("tanh", 3, (3, 5, 7), "tanh"),
        # Dropout: the identity in evaluation, and at p = 0 in training.
        unary_case("dropout_eval", 2, (3, 5, 7), "dropout", mode="eval", p="0.5"),
        unary_case("dropout_p0_train", 2, (3, 5, 7), "dropout", p="0"),
        # flatten alone before the head's dense layer.
        unary_case("flatten", 1, (3, 5, 7), "flatten"),
    ]
    cases += [flat_activations(), dense_chain(), residual_add(), concat_case(),
              adaptive_to_dense(), small_convnet("small_convnet_train", "train"),
              small_convnet("small_convnet_eval", "eval")]
    for mode in ("train", "eval"):
        cases += [batch_norm2d_case(f"batch_norm2d_{mode}", 3, mode),
                  batch_norm2d_case(f"batch_norm2d_batch1_{mode}", 1, mode, eps="1e-3",
                                    momentum="0.3"),
                  batch_norm1d_case(f"batch_norm1d_{mode}", 5, mode)]
    cases += loss_cases()
    return cases


def flat_activations():
    s = SpecWriter("flat_activations")
    x = s.input(features=11)
    for i, (op, attrs) in enumerate([("relu", {}), ("leaky_relu", {"negative_slope": "0.1"}),
                                     ("sigmoid", {}), ("tanh", {})]):
        x = s.layer("dense", f"fc{i + 1}", x, out_features=9 - i)
        x = s.layer(op, x=x, **attrs)
    x = s.layer("dense", "fc", x, out_features=4)
    s.layer("cross_entropy_loss", x=x, num_classes=4)
    return Case("flat_activations", s.text(), 3)


def dense_chain():
    s = SpecWriter("dense_chain")
    x = s.input(features=13)
    x = s.layer("dense", "fc1", x, out_features=7)
    x = s.layer("dense", "fc2", x, out_features=9, bias=False)
    x = s.layer("dense", "fc3", x, out_features=3)
    s.layer("cross_entropy_loss", x=x, num_classes=3)
    return Case("dense_chain", s.text(), 1)


def residual_add():
    s = SpecWriter("residual_add")
    x = s.input(channels=3, height=5, width=7)
    y = s.layer("conv2d", "conv1", x, out_channels=3, kernel_size=3, padding=1)
    y = s.layer("relu", x=y)
    y = s.layer("conv2d", "conv2", y, out_channels=3, kernel_size=3, padding=1, bias=False)
    y = s.add(y, x)
    y = s.layer("relu", x=y)
    return Case("residual_add", head(s, y), 2)


def concat_case():
    s = SpecWriter("concat")
    x = s.input(channels=3, height=5, width=6)
    a = s.layer("conv2d", "branch1", x, out_channels=2, kernel_size=1)
    b = s.layer("conv2d", "branch2", x, out_channels=3, kernel_size=3, padding=1)
    y = s.concat([a, b, x])
    y = s.layer("conv2d", "mix", y, out_channels=2, kernel_size=1)
    return Case("concat", head(s, y), 3)


def adaptive_to_dense():
    s = SpecWriter("conv_adaptive_dense")
    x = s.input(channels=3, height=9, width=9)
    x = s.layer("conv2d", "conv", x, out_channels=8, kernel_size=3, stride=2, padding=1)
    x = s.layer("relu", x=x)
    x = s.layer("adaptive_avg_pool2d", x=x)
    return Case("conv_adaptive_dense", head(s, x, 6), 3)


def small_convnet(name, mode):
    """conv → batch_norm2d → relu → max_pool → conv → avg_pool → dense → dropout → dense."""
    s = SpecWriter(name)
    x = s.input(channels=3, height=11, width=10)
    x = s.layer("conv2d", "conv1", x, out_channels=6, kernel_size=3, padding=1, bias=False)
    x = s.layer("batch_norm2d", "bn1", x)
    x = s.layer("relu", x=x)
    x = s.layer("max_pool2d", x=x, kernel_size=3, stride=2, padding=1)
    x = s.layer("conv2d", "conv2", x, out_channels=8, kernel_size=3, stride=2, groups=2)
    x = s.layer("leaky_relu", x=x, negative_slope="0.2")
    x = s.layer("avg_pool2d", x=x, kernel_size=2, ceil_mode=True)
    x = s.layer("flatten", x=x)
    x = s.layer("dense", "fc1", x, out_features=12)
    x = s.layer("batch_norm1d", "bn2", x)
    x = s.layer("tanh", x=x)
    x = s.layer("dropout", x=x, p="0.5" if mode == "eval" else "0")
    x = s.layer("dense", "fc2", x, out_features=5)
    s.layer("cross_entropy_loss", x=x, num_classes=5, label_smoothing="0.05")
    return Case(name, s.text(), 3, mode)


def batch_norm2d_case(name, batch, mode, **bn):
    s = SpecWriter(name)
    x = s.input(channels=3, height=4, width=5)
    x = s.layer("conv2d", "conv", x, out_channels=4, kernel_size=3, padding=1)
    x = s.layer("batch_norm2d", "bn", x, **bn)
    return Case(name, head(s, x), batch, mode)


def batch_norm1d_case(name, batch, mode):
    s = SpecWriter(name)
    x = s.input(features=7)
    x = s.layer("dense", "fc1", x, out_features=6)
    x = s.layer("batch_norm1d", "bn", x)
    x = s.layer("dense", "fc", x, out_features=4)
    s.layer("cross_entropy_loss", x=x, num_classes=4)
    return Case(name, s.text(), batch, mode)


def loss_cases():
    cases = []
    for name, batch, smoothing in (("cross_entropy", 3, None), ("cross_entropy_batch1", 1, None),
                                   ("cross_entropy_smoothing", 3, "0.1"),
                                   ("cross_entropy_smoothing_batch1", 1, "0.25")):
        # The logits are the input, as {7, 1, 1} → flatten: Kiln's lowering needs one layer
        # before the loss.
        s = SpecWriter(name)
        x = s.input(channels=7, height=1, width=1)
        x = s.layer("flatten", x=x)
        extra = {} if smoothing is None else {"label_smoothing": smoothing}
        s.layer("cross_entropy_loss", x=x, num_classes=7, **extra)
        cases.append(Case(name, s.text(), batch))

    # Regression losses on a dense prediction with data targets.
    for op, batch in (("mse_loss", 3), ("l1_loss", 1), ("bce_with_logits_loss", 5)):
        name = f"{op}_dense"
        s = SpecWriter(name)
        x = s.input(features=6)
        x = s.layer("dense", "fc", x, out_features=4)
        s.layer(op, x=x)
        cases.append(Case(name, s.text(), batch))

    # On an image prediction, targets shaped {N, C, H, W}.
    for op in ("mse_loss", "bce_with_logits_loss"):
        name = f"{op}_image"
        s = SpecWriter(name)
        x = s.input(channels=2, height=5, width=7)
        x = s.layer("conv2d", "conv", x, out_channels=3, kernel_size=3, stride=2, padding=1)
        s.layer(op, x=x)
        cases.append(Case(name, s.text(), 2))

    # Autoencoders: the target is the input.
    s = SpecWriter("mse_loss_autoencoder")
    x = s.input(features=6)
    x = s.layer("dense", "encoder", x, out_features=3)
    x = s.layer("tanh", x=x)
    x = s.layer("dense", "decoder", x, out_features=6)
    s.layer("mse_loss", x=x, target="input")
    cases.append(Case("mse_loss_autoencoder", s.text(), 3))

    s = SpecWriter("l1_loss_autoencoder_image")
    x = s.input(channels=2, height=5, width=5)
    x = s.layer("conv2d", "conv", x, out_channels=2, kernel_size=3, padding=1)
    s.layer("l1_loss", x=x, target="input")
    cases.append(Case("l1_loss_autoencoder_image", s.text(), 2))

    s = SpecWriter("bce_with_logits_loss_autoencoder")
    x = s.input(features=5)
    x = s.layer("dense", "fc", x, out_features=5)
    s.layer("bce_with_logits_loss", x=x, target="input")
    cases.append(Case("bce_with_logits_loss_autoencoder", s.text(), 2))
    return cases


# The models of models/*.cpp, written in the same order so that automatic names agree.


def lenet5_spec():
    s = SpecWriter("lenet5")
    x = s.input(channels=1, height=28, width=28)
    x = s.layer("conv2d", "conv1", x, out_channels=6, kernel_size=5, padding=2)
    x = s.layer("relu", x=x)
    x = s.layer("max_pool2d", x=x, kernel_size=2)
    x = s.layer("conv2d", "conv2", x, out_channels=16, kernel_size=5)
    x = s.layer("relu", x=x)
    x = s.layer("max_pool2d", x=x, kernel_size=2)
    x = s.layer("conv2d", "conv3", x, out_channels=120, kernel_size=5)
    x = s.layer("relu", x=x)
    x = s.layer("flatten", x=x)
    x = s.layer("dense", "fc1", x, out_features=84)
    x = s.layer("relu", x=x)
    x = s.layer("dense", "fc2", x, out_features=10)
    s.layer("cross_entropy_loss", x=x, num_classes=10)
    return s.text()


def conv_bn(s, block, index, x, out_channels, kernel_size, stride):
    x = s.layer("conv2d", f"{block}.conv{index}", x, out_channels=out_channels,
                kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
    return s.layer("batch_norm2d", f"{block}.bn{index}", x)


def residual_block(s, name, bottleneck, x, in_channels, planes, stride):
    """torchvision's BasicBlock or Bottleneck as one Kiln block, as models/resnet.cpp."""
    s.begin_block(name)
    expansion = 4 if bottleneck else 1
    if bottleneck:
        y = s.layer("relu", x=conv_bn(s, name, 1, x, planes, 1, 1))
        y = s.layer("relu", x=conv_bn(s, name, 2, y, planes, 3, stride))
        y = conv_bn(s, name, 3, y, planes * expansion, 1, 1)
    else:
        y = s.layer("relu", x=conv_bn(s, name, 1, x, planes, 3, stride))
        y = conv_bn(s, name, 2, y, planes, 3, 1)
    shortcut = x
    if stride != 1 or in_channels != planes * expansion:
        shortcut = s.layer("conv2d", f"{name}.downsample.0", x, out_channels=planes * expansion,
                           kernel_size=1, stride=stride, bias=False)
        shortcut = s.layer("batch_norm2d", f"{name}.downsample.1", shortcut)
    y = s.add(y, shortcut)
    y = s.layer("relu", x=y)
    s.end_block()
    return y, planes * expansion


def resnet_spec(name, bottleneck, depths, channels, size, classes):
    s = SpecWriter(name)
    x = s.input(channels=channels, height=size, width=size)
    if name == "resnet20":
        x = s.layer("conv2d", "conv1", x, out_channels=16, kernel_size=3, padding=1, bias=False)
        x = s.layer("batch_norm2d", "bn1", x)
        x = s.layer("relu", x=x)
        width, planes, strides = 16, (16, 32, 64), (1, 2, 2)
    else:
        x = s.layer("conv2d", "conv1", x, out_channels=64, kernel_size=7, stride=2, padding=3,
                    bias=False)
        x = s.layer("batch_norm2d", "bn1", x)
        x = s.layer("relu", x=x)
        x = s.layer("max_pool2d", x=x, kernel_size=3, stride=2, padding=1)
        width, planes, strides = 64, (64, 128, 256, 512), (1, 2, 2, 2)
    for stage, (depth, p, stride) in enumerate(zip(depths, planes, strides), 1):
        for i in range(depth):
            x, width = residual_block(s, f"layer{stage}.{i}", bottleneck, x, width, p,
                                      stride if i == 0 else 1)
    x = s.layer("adaptive_avg_pool2d", x=x)
    x = s.layer("flatten", x=x)
    x = s.layer("dense", "fc", x, out_features=classes)
    s.layer("cross_entropy_loss", x=x, num_classes=classes)
    return s.text()


def alexnet_spec(size, classes):
    """models/alexnet.cpp: torchvision's AlexNet without its adaptive pooling to 6×6."""
    s = SpecWriter("alexnet")
    x = s.input(channels=3, height=size, width=size)
    for name, out, k, stride, padding, pool in (("features.0", 64, 11, 4, 2, True),
                                                ("features.3", 192, 5, 1, 2, True),
                                                ("features.6", 384, 3, 1, 1, False),
                                                ("features.8", 256, 3, 1, 1, False),
                                                ("features.10", 256, 3, 1, 1, True)):
        x = s.layer("conv2d", name, x, out_channels=out, kernel_size=k, stride=stride,
                    padding=padding)
        x = s.layer("relu", x=x)
        if pool:
            x = s.layer("max_pool2d", x=x, kernel_size=3, stride=2)
    x = s.layer("flatten", x=x)
    x = s.layer("dropout", x=x, p="0.5")
    x = s.layer("dense", "classifier.1", x, out_features=4096)
    x = s.layer("relu", x=x)
    x = s.layer("dropout", x=x, p="0.5")
    x = s.layer("dense", "classifier.4", x, out_features=4096)
    x = s.layer("relu", x=x)
    x = s.layer("dense", "classifier.6", x, out_features=classes)
    s.layer("cross_entropy_loss", x=x, num_classes=classes)
    return s.text()


def mlp_regression_spec():
    """models/mlp_regression.cpp at its defaults: 1 feature, two tanh layers of 64, 1 output."""
    s = SpecWriter("mlp_regression")
    x = s.input(features=1)
    x = s.layer("dense", "fc1", x, out_features=64)
    x = s.layer("tanh", x=x)
    x = s.layer("dense", "fc2", x, out_features=64)
    x = s.layer("tanh", x=x)
    x = s.layer("dense", "fc3", x, out_features=1)
    s.layer("mse_loss", x=x)
    return s.text()


def denoising_autoencoder_spec():
    """models/denoising_autoencoder.cpp at its default 1×28×28 input."""
    s = SpecWriter("denoising_autoencoder")
    x = s.input(channels=1, height=28, width=28)
    x = s.layer("conv2d", "conv1", x, out_channels=32, kernel_size=3, padding=1)
    x = s.layer("relu", x=x)
    x = s.layer("conv2d", "conv2", x, out_channels=32, kernel_size=3, padding=1)
    x = s.layer("relu", x=x)
    x = s.layer("conv2d", "conv3", x, out_channels=1, kernel_size=3, padding=1)
    x = s.layer("sigmoid", x=x)
    s.layer("mse_loss", x=x)
    return s.text()


RESNET_INPUT_SIZE = 64

RESNETS = {
    "resnet18": (False, (2, 2, 2, 2)),
    "resnet34": (False, (3, 4, 6, 3)),
    "resnet50": (True, (3, 4, 6, 3)),
    "resnet101": (True, (3, 4, 23, 3)),
    "resnet152": (True, (3, 8, 36, 3)),
}


def model_cases():
    cases = [
        Case("lenet5", lenet5_spec(), 4, sampled=True),
        # resnet20 at its default input, 1×28×28 with 10 classes.
        Case("resnet20", resnet_spec("resnet20", False, (3, 3, 3), 1, 28, 10), 3, sampled=True),
        Case("mlp_regression", mlp_regression_spec(), 5, sampled=True),
        Case("denoising_autoencoder", denoising_autoencoder_spec(), 2, sampled=True),
    ]
    # The torchvision ResNets at 3×64×64, batch 2, 10 classes. At 3×32×32 their last stage runs
    # at 1×1, so each of its BatchNorms normalizes 2 values per channel in training. Its output
    # is then ±1 whatever the input, its true input gradient is nearly 0, and what float32
    # computes there is round-off: PyTorch's own float32 logits of resnet50 were 56% off its
    # float64 ones. At 64×64 the last stage runs at 2×2 (8 values per channel).
    # The deeper ones start with the last BatchNorm of each residual branch scaled by 1/4 and
    # take the best of 4 inputs, which keeps their float32 steps near float64 (file comment).
    for name, (bottleneck, depths) in RESNETS.items():
        deep = name != "resnet18"
        last_bn = "bn3.weight" if bottleneck else "bn2.weight"
        cases.append(Case(name, resnet_spec(name, bottleneck, depths, 3, RESNET_INPUT_SIZE, 10),
                          2, sampled=True, scaled_weights=(last_bn, 0.25) if deep else None,
                          input_salts=4 if deep else 1))
    # AlexNet has dropout (p = 0.5), so its step is stored in eval mode, where dropout is the
    # identity; it has no BatchNorm, so that step is otherwise the training step.
    cases.append(Case("alexnet", alexnet_spec(64, 10), 2, mode="eval", sampled=True))
    return cases


# ---- checks against torchvision -----------------------------------------------------------------


def check_torchvision(case, model, result):
    """Loads the case's weights into torchvision's model of the same name and checks that it
    computes the same output, loss, gradients and running statistics. Returns a message."""
    try:
        import torchvision
    except ImportError:
        return "torchvision not installed, not checked"
    if case.name not in RESNETS:
        return "no torchvision counterpart"
    buffers, grad_of, prediction, loss, x32, targets = result

    net = getattr(torchvision.models, case.name)(num_classes=10).double()
    scaled = case.scaled_weights
    state = {n: torch.from_numpy(reference_value(n, shape, fan_in, scaled)).double()
             for n, shape, fan_in in model.params}
    state.update({n: torch.from_numpy(reference_value(n, shape, 0, scaled)).double()
                  for n, shape in model.buffers})
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [n for n in missing if not n.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"{case.name}: torchvision's state_dict differs: missing {missing}, "
                 f"unexpected {unexpected}")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = to_float32("0.1")
            m.eps = to_float32("1e-5")

    net.train()
    out = net(torch.from_numpy(x32).double())
    tv_loss = F.cross_entropy(out, torch.from_numpy(targets).long())
    tv_loss.backward()

    worst = max((out - prediction).abs().max().item(), (tv_loss - loss).abs().item())
    named = dict(net.named_parameters())
    for n, _, _ in model.params:
        worst = max(worst, (named[n].grad - grad_of[n]).abs().max().item())
    tv_buffers = dict(net.named_buffers())
    for n, b in buffers.items():
        worst = max(worst, (tv_buffers[n] - b).abs().max().item())
    if worst > 1e-10:
        sys.exit(f"{case.name}: torchvision's step differs from the spec's by {worst:.2e}")
    return f"matches torchvision (largest difference {worst:.1e})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out", default=os.path.join(repository, "tests", "data", "parity"),
                        help="directory to write <case>.safetensors into")
    parser.add_argument("--case", action="append",
                        help="write only this case (repeatable); default: every case")
    parser.add_argument("--check-torchvision", action="store_true",
                        help="also check the ResNet cases against torchvision's models")
    args = parser.parse_args()

    torch.set_num_threads(1)  # A fixed summation order, so that every run writes the same bytes.
    cases = op_cases() + model_cases()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        sys.exit("two cases share a name")
    if args.case:
        unknown = sorted(set(args.case) - set(names))
        if unknown:
            sys.exit(f"unknown case {unknown}; the cases are: {' '.join(names)}")
        cases = [c for c in cases if c.name in args.case]

    os.makedirs(args.out, exist_ok=True)
    for case in cases:
        model, arrays, metadata, result = run_case(case)
        path = os.path.join(args.out, f"{case.name}.safetensors")
        write_safetensors(path, arrays, metadata)
        check = ""
        if args.check_torchvision:
            check = "; " + check_torchvision(case, model, result)
        print(f"{case.name:40s} {case.mode:5s} batch {case.batch}  loss {float(arrays['loss']):.6f}"
              f"  {os.path.getsize(path):8d} bytes{check}")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out)
                if f.endswith(".safetensors"))
    print(f"{args.out}: {total} bytes in all ({total / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
