#!/usr/bin/env python3
"""Runs an ONNX model with onnxruntime on raw float32 input and writes the raw float32 output.

    onnx_run.py MODEL.onnx INPUT.bin BATCH OUTPUT.bin

tests/onnx_export_test.cpp compares the output with Kiln's predictions. Exits 3 when
onnxruntime is not installed, so the test can skip.
"""
import sys

try:
    import numpy as np
    import onnxruntime
except ImportError as error:
    print(f"onnx_run: {error}", file=sys.stderr)
    sys.exit(3)


def main():
    model, input_path, batch, output_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    shape = [batch] + [int(d) for d in session.get_inputs()[0].shape[1:]]
    inputs = np.fromfile(input_path, dtype=np.float32).reshape(shape)
    (outputs,) = session.run(["output"], {"input": inputs})
    outputs.astype(np.float32).tofile(output_path)


if __name__ == "__main__":
    main()
