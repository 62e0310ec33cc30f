#!/usr/bin/python3
"""Writes tests/data/augment_reference.safetensors: torchvision's image ops on fixed inputs.

tests/augment_test.cpp applies Kiln's functional ops (runtime/augment.h) with the same parameters
and compares the outputs element by element.

Run with a Python that has torch and torchvision (on Debian 12, /usr/bin/python3 with the
python3-torchvision package, torchvision 0.14):

    /usr/bin/python3 tools/make_augment_reference.py
    /usr/bin/python3 tools/make_augment_reference.py --data /usr/share/datasets/fashion-mnist \
        --out tests/data/augment_reference.safetensors

What the file contains (all F32):
    input.gray [2, 1, 28, 28]        the first 2 Fashion-MNIST test images, bytes / 255
    input.rgb [2, 3, 15, 21]         uniform random values in [0, 1) (a torch.Generator, seed 0)
    input.rgb_coarse [2, 3, 15, 21]  random multiples of 1/4, so that channels often tie,
                                     which exercises the hue conversion's tie rules
    <op>.<input>.<k>.params          the parameters of case k of op on input.<input>
    <op>.<input>.<k>.output          torchvision's output for that case
    perspective.<input>.<k>.coeffs   the 8 coefficients torchvision solved for that case

The ops and their params, in the order of the arguments of torchvision.transforms.functional:
    hflip          no parameters (an empty params tensor)
    erase          top, left, height, width, value
    resized_crop   top, left, height, width, output height, output width (bilinear,
                   antialias=False, as the tensor path of RandomResizedCrop in 0.14)
    perspective    startpoints x0 y0 ... x3 y3, then endpoints in the same order (bilinear,
                   fill=[0.0] * channels, which RandomPerspective passes for its default fill=0)
    brightness, contrast, saturation, hue   the factor (adjust_<op>)

Factors are float32 values, so Kiln reads the same numbers that torchvision used. Two runs with the
same torch and torchvision versions write the same bytes.
"""

import argparse
import gzip
import os
import struct
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as TF

from safetensors_io import write_safetensors

SEED = 0
GRAY_IMAGES = 2
RGB_SHAPE = (2, 3, 15, 21)

# Corners of a 28 x 28 and a 21 x 15 (width x height) image, in torchvision's order: top-left,
# top-right, bottom-right, bottom-left.
GRAY_CORNERS = [[0, 0], [27, 0], [27, 27], [0, 27]]
RGB_CORNERS = [[0, 0], [20, 0], [20, 14], [0, 14]]

# (op, input, parameters). resized_crop covers upscaling, downscaling, odd and non-square sizes.
# perspective covers a mild and a strong distortion (end points as RandomPerspective draws them
# for distortion_scale 0.5 and 1.0) and the identity, whose borders show the fill mask.
CASES = [
    ("hflip", "gray", []),
    ("hflip", "rgb", []),
    ("erase", "gray", [5, 3, 10, 12, 0.0]),
    ("erase", "gray", [0, 20, 28, 8, 0.5]),
    ("erase", "rgb", [2, 4, 7, 11, 0.25]),
    ("resized_crop", "gray", [4, 2, 20, 24, 28, 28]),
    ("resized_crop", "gray", [0, 0, 28, 28, 13, 17]),
    ("resized_crop", "gray", [3, 5, 9, 21, 28, 28]),
    ("resized_crop", "gray", [1, 1, 26, 25, 11, 9]),
    ("resized_crop", "rgb", [2, 3, 11, 17, 20, 24]),
    ("resized_crop", "rgb", [0, 0, 15, 21, 7, 5]),
    ("perspective", "gray", GRAY_CORNERS + [[3, 5], [25, 2], [24, 26], [6, 23]]),
    ("perspective", "gray", GRAY_CORNERS + [[13, 12], [14, 1], [27, 27], [0, 14]]),
    ("perspective", "gray", GRAY_CORNERS + GRAY_CORNERS),
    ("perspective", "rgb", RGB_CORNERS + [[4, 3], [17, 1], [20, 12], [2, 14]]),
    ("brightness", "gray", [0.3]),
    ("brightness", "gray", [1.7]),
    ("brightness", "rgb", [0.6]),
    ("brightness", "rgb", [1.4]),
    ("contrast", "gray", [0.2]),
    ("contrast", "gray", [1.6]),
    ("contrast", "rgb", [0.5]),
    ("contrast", "rgb", [1.9]),
    ("saturation", "gray", [0.5]),
    ("saturation", "rgb", [0.0]),
    ("saturation", "rgb", [0.5]),
    ("saturation", "rgb", [1.8]),
    ("hue", "gray", [0.2]),
    ("hue", "rgb", [-0.5]),
    ("hue", "rgb", [-0.2]),
    ("hue", "rgb", [0.1]),
    ("hue", "rgb", [0.45]),
    ("hue", "rgb_coarse", [-0.3]),
]


def read_idx_images(path):
    """Returns the uint8 array [count, rows, cols] of a gzip-compressed IDX image file."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count, rows, cols = struct.unpack(">4I", data[:16])
    if magic != 0x00000803:
        sys.exit(f"{path}: magic number {magic:#010x}, expected 0x00000803 (IDX images)")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def make_inputs(data_dir):
    """Returns the input images by name, as float32 torch tensors in NCHW layout."""
    images = read_idx_images(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))
    # Divided in float32, as Kiln's IDX reader does, so that the values match bit for bit.
    gray = images[:GRAY_IMAGES].astype(np.float32)[:, None, :, :] / np.float32(255)
    generator = torch.Generator().manual_seed(SEED)
    rgb = torch.rand(RGB_SHAPE, generator=generator)
    coarse = torch.randint(0, 5, RGB_SHAPE, generator=generator).to(torch.float32) / 4
    return {"gray": torch.from_numpy(gray), "rgb": rgb, "rgb_coarse": coarse}


def apply(op, image, params):
    """Returns torchvision's output of `op` with `params` on `image` [N, C, H, W], and the
    perspective coefficients (None for the other ops)."""
    if op == "hflip":
        return TF.hflip(image), None
    if op == "erase":
        top, left, height, width, value = params
        return TF.erase(image, top, left, height, width, torch.tensor(value)), None
    if op == "resized_crop":
        top, left, height, width, out_height, out_width = params
        return TF.resized_crop(image, top, left, height, width, [out_height, out_width],
                               TF.InterpolationMode.BILINEAR, antialias=False), None
    if op == "perspective":
        start, end = params[:4], params[4:]
        coeffs = TF._get_perspective_coeffs(start, end)
        fill = [0.0] * image.shape[1]
        return TF.perspective(image, start, end, TF.InterpolationMode.BILINEAR, fill), coeffs
    factor = params[0]
    adjust = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast,
              "saturation": TF.adjust_saturation, "hue": TF.adjust_hue}[op]
    # adjust_contrast averages over the whole [N, C, H, W] tensor, so apply it per image.
    return torch.stack([adjust(one, factor) for one in image]), None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                        help="directory with the gzip-compressed Fashion-MNIST IDX files")
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--out",
                        default=os.path.join(repository, "tests", "data",
                                             "augment_reference.safetensors"),
                        help="file to write (default: tests/data/augment_reference.safetensors)")
    args = parser.parse_args()

    inputs = make_inputs(args.data)
    arrays = {f"input.{name}": image.numpy() for name, image in inputs.items()}
    counts = {}
    for op, input_name, params in CASES:
        k = counts.get((op, input_name), 0)
        counts[(op, input_name)] = k + 1
        prefix = f"{op}.{input_name}.{k}"
        if op == "perspective":
            flat = [float(v) for point in params for v in point]
            call_params = params
        else:
            # Factors are rounded to float32 first, so that Kiln reads exactly the value used here.
            flat = [float(np.float32(v)) for v in params]
            call_params = flat
            if op == "erase":
                call_params = [int(v) for v in flat[:4]] + [flat[4]]
            elif op == "resized_crop":
                call_params = [int(v) for v in flat]
        output, coeffs = apply(op, inputs[input_name], call_params)
        arrays[f"{prefix}.params"] = np.array(flat, dtype=np.float32)
        arrays[f"{prefix}.output"] = output.numpy().astype(np.float32)
        if coeffs is not None:
            arrays[f"{prefix}.coeffs"] = np.array(coeffs, dtype=np.float32)

    metadata = {"torch": torch.__version__, "torchvision": torchvision.__version__,
                "seed": str(SEED)}
    write_safetensors(args.out, arrays, metadata)
    print(f"wrote {args.out}: {len(CASES)} cases, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
