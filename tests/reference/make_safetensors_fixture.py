#!/usr/bin/env python3
"""Writes tests/fixtures/python_written.safetensors with the reference Python
safetensors writer, so test_safetensors.c checks that scfm reads what the
Hugging Face tools write. Every value is a simple formula of its index; the C
test recomputes them. Needs torch (for BF16), numpy and safetensors."""
import argparse
import pathlib

import numpy as np
import safetensors
import torch
from safetensors.torch import save_file


def tensors():
    arrays = {
        # -1.0, -0.5, ..., 1.5: exact in every float format below.
        "f32": (np.arange(6, dtype=np.float32) * 0.5 - 1.0).reshape(2, 3),
        "f64": np.arange(4, dtype=np.float64).reshape(2, 2, 1) / 8.0,
        "f16": np.array([0.5, -2.0, 1024.0], dtype=np.float16),
        "i32": np.array([[-7, 0, 2**31 - 1]], dtype=np.int32),
        "i64": np.array([-(2**40), 3, 2**62], dtype=np.int64),
        "u8": np.arange(5, dtype=np.uint8) * 50,
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        # A name that needs escaping in JSON.
        'layer.0."quoted"\\name': np.array([42], dtype=np.int16),
    }
    out = {name: torch.from_numpy(a) for name, a in arrays.items()}
    out["bf16"] = torch.tensor([1.0, -0.5, 3.0], dtype=torch.bfloat16)
    return out


def main():
    out = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "python_written.safetensors"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=out)
    args = parser.parse_args()
    metadata = {
        "format": "pt",
        "note": 'tab\tquote" backslash\\ newline\n gène ✓',
        "generator": f"safetensors {safetensors.__version__}",
    }
    save_file(tensors(), str(args.out), metadata=metadata)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
