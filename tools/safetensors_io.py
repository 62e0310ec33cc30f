"""Writes safetensors files with numpy alone, for scripts that run without the safetensors package.

The format (https://github.com/huggingface/safetensors): an unsigned 64-bit little-endian header
size, a JSON header that maps each tensor name to {"dtype", "shape", "data_offsets"} beside an
optional "__metadata__" object of strings, then the tensors' raw little-endian bytes without gaps.

    from safetensors_io import write_safetensors
    write_safetensors("out.safetensors", {"fc.bias": np.zeros(10, np.float32)}, {"seed": "0"})

Run from tools/ or with tools/ on sys.path, as the scripts beside this one import it.
"""

import json
import os
import struct

import numpy as np

# The safetensors name of each numpy dtype that write_safetensors accepts.
DTYPE_NAMES = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint8): "U8",
}


def write_safetensors(path, arrays, metadata, dtype_names=None):
    """Writes `arrays` (name -> numpy array) and `metadata` (str -> str) to `path`.

    The header lists "__metadata__" first, then the tensors sorted by name with their fields in
    the order dtype, shape, data_offsets, as compact JSON padded with spaces to a multiple of 8
    bytes. The same input therefore always gives the same bytes. The file is written to
    `<path>.tmp` and renamed over `path`, so a reader never sees a partial file.

    `dtype_names` maps a tensor name to the dtype to record for it when the numpy dtype cannot
    express it: BF16, which numpy lacks, is passed as a uint16 array of bit patterns with
    dtype_names={name: "BF16"}. Raises ValueError for an array whose dtype has no safetensors
    name here and no entry in `dtype_names`.
    """
    dtype_names = dtype_names or {}
    header = {"__metadata__": metadata}
    offset = 0
    for name in sorted(arrays):
        a = arrays[name]
        dtype = dtype_names.get(name) or DTYPE_NAMES.get(a.dtype)
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has numpy dtype {a.dtype}, which has no "
                             f"safetensors name here; convert it to one of "
                             f"{', '.join(str(d) for d in DTYPE_NAMES)} or pass dtype_names")
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(arrays):
            f.write(arrays[name].astype(arrays[name].dtype.newbyteorder("<")).tobytes())
    os.replace(tmp, path)
