#!/usr/bin/python3
r"""Saves the state_dict of a torchvision model as safetensors, for `kiln import-weights`.

    /usr/bin/python3 tools/export_torchvision.py --arch resnet18 --out resnet18.safetensors
    /usr/bin/python3 tools/export_torchvision.py --arch resnet50 --weights IMAGENET1K_V2 \
        --out resnet50.safetensors
    /usr/bin/python3 tools/export_torchvision.py --arch lenet5 --dtype float64 \
        --out lenet5.safetensors

The file has what `safetensors.torch.save_file(model.state_dict(), path)` writes: every parameter
and buffer under its state_dict name and shape, and BatchNorm's `num_batches_tracked` as I64. The
script writes the format itself with tools/safetensors_io.py, so it needs torch and numpy but not
the safetensors package.

--arch names a torchvision builder (torchvision.models.<arch>), which needs torchvision 0.13 or
later for the `weights` argument (Debian 12's python3-torchvision is 0.14). Without torchvision
the script prints how to install it and exits with status 1. --arch lenet5 is the LeNet-5 of
models/lenet5.cpp (defined in tools/make_reference.py) and needs only torch, so the import can
be tried without torchvision.

Without --weights the parameters are PyTorch's default initialization after
torch.manual_seed(--seed). --weights takes a torchvision weights name such as DEFAULT or
IMAGENET1K_V1, which torchvision downloads on first use.
"""

import argparse
import os
import sys

import numpy as np
import torch

from safetensors_io import write_safetensors

# torchvision builders whose state_dict names and shapes match a Kiln model of the same name
# (models/resnet.cpp, models/alexnet.cpp).
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "alexnet")
ARCHS = TORCHVISION_ARCHS + ("lenet5",)

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def torchvision_release():
    """Returns the torchvision release series that pairs with the installed torch, such as "0.14"
    for torch 1.13: torch 1.m pairs with torchvision 0.(m + 1), torch 2.m with 0.(m + 15)."""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    return f"0.{minor + 1}" if major == 1 else f"0.{minor + 15}"


def build_torchvision(arch, weights, classes):
    """Returns torchvision.models.<arch>, or exits with the command that installs torchvision."""
    try:
        import torchvision
    except ImportError:
        sys.exit(f"export_torchvision.py: --arch {arch} needs torchvision, which is not installed "
                 f"for {sys.executable}. Install the release that pairs with torch "
                 f"{torch.__version__}: on Debian, where python3-torch provides torch,\n"
                 f"    apt-get install python3-torchvision\n"
                 f"and elsewhere\n"
                 f"    {sys.executable} -m pip install 'torchvision=={torchvision_release()}.*'\n"
                 f"Or use --arch lenet5, which needs only torch.")
    release = tuple(int(part) for part in torchvision.__version__.split("+")[0].split(".")[:2])
    if release < (0, 13):
        sys.exit(f"export_torchvision.py: torchvision {torchvision.__version__} is too old; the "
                 f"`weights` argument needs 0.13 or later:\n"
                 f"    {sys.executable} -m pip install 'torchvision=={torchvision_release()}.*'")
    kwargs = {"weights": weights}
    if classes is not None:
        kwargs["num_classes"] = classes
    return getattr(torchvision.models, arch)(**kwargs)


def build_lenet5(weights, classes):
    """Returns the LeNet-5 of tools/make_reference.py, which has Kiln's parameter names."""
    if weights is not None or classes not in (None, 10):
        sys.exit("export_torchvision.py: --arch lenet5 has no pretrained weights and 10 classes; "
                 "drop --weights and --classes")
    from make_reference import LeNet5
    return LeNet5()


def state_dict_arrays(model, dtype):
    """Returns the model's state_dict as numpy arrays, floating-point tensors converted to
    `dtype`, and the safetensors dtype names that numpy cannot express (BF16)."""
    arrays, dtype_names = {}, {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        if tensor.dtype == torch.bfloat16:
            # numpy has no bfloat16: store the bit patterns, and record the dtype separately.
            arrays[name] = tensor.view(torch.int16).numpy().view(np.uint16)
            dtype_names[name] = "BF16"
        else:
            arrays[name] = tensor.numpy()
    return arrays, dtype_names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", required=True, choices=ARCHS, help="model to export")
    parser.add_argument("--out", required=True, help="safetensors file to write")
    parser.add_argument("--weights", default=None,
                        help="torchvision weights name, e.g. DEFAULT or IMAGENET1K_V1 "
                             "(default: random initialization)")
    parser.add_argument("--classes", type=int, default=None,
                        help="number of classes of the final layer (default: the builder's, "
                             "1000 for torchvision, 10 for lenet5)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random initialization (default: 0)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="dtype of the floating-point tensors in the file (default: float32); "
                             "kiln import-weights converts float64, float16 and bfloat16 to "
                             "float32")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    if args.arch == "lenet5":
        model = build_lenet5(args.weights, args.classes)
    else:
        model = build_torchvision(args.arch, args.weights, args.classes)

    arrays, dtype_names = state_dict_arrays(model, DTYPES[args.dtype])
    metadata = {
        "format": "pt",
        "arch": args.arch,
        "weights": args.weights or f"random, torch.manual_seed({args.seed})",
        "torch_version": torch.__version__,
        "made_by": "tools/export_torchvision.py",
    }
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        sys.exit(f"export_torchvision.py: directory {out_dir} does not exist; create it or choose "
                 f"another --out")
    write_safetensors(args.out, arrays, metadata, dtype_names)

    num_values = sum(a.size for a in arrays.values())
    print(f"wrote {args.out}: {args.arch}, {len(arrays)} tensors, {num_values} values, "
          f"{args.dtype}, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
