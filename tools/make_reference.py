#!/usr/bin/python3
"""Writes tests/data/lenet5_step.safetensors: two LeNet-5 SGD steps computed by PyTorch.

tests/reference_test.cpp loads the file, runs the same two steps through Kiln's compiled
LeNet-5 and compares every value.

Run with a Python that has torch (on Debian 12, /usr/bin/python3 with the python3-torch
package):

    /usr/bin/python3 tools/make_reference.py
    /usr/bin/python3 tools/make_reference.py --data /usr/share/datasets/fashion-mnist \
        --out tests/data/lenet5_step.safetensors

The script needs only torch and numpy, and writes the safetensors format itself with
tools/safetensors_io.py. When the `safetensors` package is installed, it reads the file back with
it as a check. Two runs with the same torch version write the same bytes.

What the file contains (all F32 except `labels` and `rows.*`, which are I32):
    input [8, 1, 28, 28]     the first 8 Fashion-MNIST test images, bytes / 255
    labels [8]               their labels
    param.<name>             the initial parameters (PyTorch default init, torch.manual_seed(0))
    logits [8, 10], loss []  forward pass and mean cross-entropy at the initial parameters
    grad.<name>              gradients of that loss
    after1.<name>            parameters after one torch.optim.SGD step on those gradients
    logits2, loss2, grad2.<name>   the same at the parameters after step 1
    after2.<name>            parameters after the second step (momentum now nonzero)

param.* and grad.* are complete. grad2.*, after1.* and after2.* are complete too, except for the
two largest weights, conv3.weight and fc1.weight: there they keep only the rows (output channels
or features) listed in rows.<name>, the first 8 and the last 8, so that the file stays under
1 MB. Such a tensor has the parameter's shape with the first dimension cut to the number of rows.

The arithmetic runs in float64 on the float32 initial parameters and images, and the results are
rounded to float32 only when written. So the stored values are correct to float32 precision, and
a larger difference from Kiln is Kiln's error, not PyTorch's.
"""

import argparse
import gzip
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from safetensors_io import write_safetensors

BATCH = 8
SEED = 0
LR = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# Parameters with more elements than this keep only their first and last KEPT_ROWS rows in grad2.*,
# after1.* and after2.*.
MAX_FULL_NUMEL = 4096
KEPT_ROWS = 8


class LeNet5(nn.Module):
    """The model of models/lenet5.cpp, with the same parameter names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(F.relu(self.conv3(x)), 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def read_idx(path, magic):
    """Returns the array in a gzip-compressed IDX file of unsigned bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    found, = struct.unpack(">I", data[:4])
    if found != magic:
        sys.exit(f"{path}: magic number {found:#010x}, expected {magic:#010x}")
    dims = struct.unpack(f">{magic & 0xFF}I", data[4:4 + 4 * (magic & 0xFF)])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load_test_batch(data_dir):
    """Returns the first BATCH test images as float32 [BATCH, 1, 28, 28] and labels as int32."""
    images = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"), 0x00000803)
    labels = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"), 0x00000801)
    # Divided in float32, as Kiln's IDX reader does, so that the bytes match.
    x = images[:BATCH].astype(np.float32)[:, None, :, :] / np.float32(255)
    return x, labels[:BATCH].astype(np.int32)


def kept_rows(param):
    """Returns the rows of `param` stored in grad2.*, after1.* and after2.*, or None for all."""
    if param.numel() <= MAX_FULL_NUMEL:
        return None
    n = param.shape[0]
    return list(range(KEPT_ROWS)) + list(range(n - KEPT_ROWS, n))


def train_step(model, optimizer, x, y, suffix, tensors):
    """Runs one forward, backward and SGD step and stores logits<suffix>, loss<suffix> and the
    gradients grad<suffix>.<name>. Returns the number of samples whose top logit is the label."""
    optimizer.zero_grad()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    tensors["logits" + suffix] = logits.detach()
    tensors["loss" + suffix] = loss.detach()
    for name, p in model.named_parameters():
        tensors[f"grad{suffix}.{name}"] = p.grad.detach().clone()
    optimizer.step()
    return logits.argmax(1).eq(y).sum().item()


def to_numpy(name, value, rows):
    """Returns the stored form of one tensor: float32, and cut to `rows` in grad2, after1 and
    after2."""
    group, _, param = name.partition(".")
    value = value.numpy()
    if group in ("grad2", "after1", "after2") and rows.get(param) is not None:
        value = value[rows[param]]
    # Not np.ascontiguousarray, which turns the scalar losses into shape [1].
    return np.array(value, dtype=np.float32, order="C")


def check_with_package(path, arrays, metadata):
    """Reads `path` back with the safetensors package, when it is installed, and exits with a
    message unless it returns `arrays` and `metadata` unchanged."""
    # The package does not write the file: its save_file (version 0.8.0) puts the metadata in hash
    # order, which changes from run to run, so two runs would write different bytes.
    try:
        from safetensors import safe_open
    except ImportError:
        return "not installed, file not checked"
    with safe_open(path, "np") as f:
        names = set(f.keys())
        if names != set(arrays) or f.metadata() != metadata:
            sys.exit(f"{path}: the safetensors package reads other names or metadata than written")
        for name in names:
            value = f.get_tensor(name)
            if value.dtype != arrays[name].dtype or not np.array_equal(value, arrays[name]):
                sys.exit(f"{path}: the safetensors package reads {name} differently than written")
    return "file checked"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                        help="directory with the gzip-compressed Fashion-MNIST IDX files")
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out",
                        default=os.path.join(repository, "tests", "data", "lenet5_step.safetensors"),
                        help="file to write (default: tests/data/lenet5_step.safetensors)")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # A fixed summation order, so that every run writes the same bytes.
    model = LeNet5()  # Initialized in float32, as PyTorch does by default.
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = {name: kept_rows(p) for name, p in model.named_parameters()}
    model.double()

    images, labels = load_test_batch(args.data)
    x = torch.from_numpy(images).double()
    y = torch.from_numpy(labels).long()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)

    tensors = {"input": torch.from_numpy(images)}
    tensors.update({f"param.{name}": p for name, p in initial.items()})
    correct1 = train_step(model, optimizer, x, y, "", tensors)
    tensors.update({f"after1.{name}": p.detach().clone() for name, p in model.named_parameters()})
    correct2 = train_step(model, optimizer, x, y, "2", tensors)
    tensors.update({f"after2.{name}": p.detach().clone() for name, p in model.named_parameters()})

    arrays = {name: to_numpy(name, value, rows) for name, value in tensors.items()}
    arrays["labels"] = labels
    for name, r in rows.items():
        if r is not None:
            arrays[f"rows.{name}"] = np.array(r, dtype=np.int32)

    metadata = {
        "lr": repr(LR),
        "momentum": repr(MOMENTUM),
        "weight_decay": repr(WEIGHT_DECAY),
        "seed": str(SEED),
        "torch_version": torch.__version__,
        "correct": str(correct1),
        "correct2": str(correct2),
        "made_by": "tools/make_reference.py: LeNet-5 (models/lenet5.cpp) in PyTorch, "
                   "default init after torch.manual_seed(0), the first 8 Fashion-MNIST t10k "
                   "images, mean cross-entropy, two torch.optim.SGD steps on that batch, "
                   "computed in float64 and stored as float32",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_safetensors(args.out, arrays, metadata)
    checked = check_with_package(args.out, arrays, metadata)
    print(f"wrote {args.out}: {len(arrays)} tensors, {os.path.getsize(args.out)} bytes, "
          f"loss {tensors['loss'].item():.6f} then {tensors['loss2'].item():.6f}, "
          f"correct {correct1} then {correct2} of {BATCH}; safetensors package: {checked}")


if __name__ == "__main__":
    main()
