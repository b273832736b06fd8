#!/usr/bin/env python3
"""Writes tests/fixtures/io/block_formats.json: GGUF block-quantized data and its dequantization by gguf-py.

gguf-py (the `gguf` package on PyPI, published by the llama.cpp project) carries numpy implementations of the
block formats. For each type kiln reads, this draws random blocks (random quant bytes; the f16 scale fields set to
finite values of sensible size), dequantizes them with gguf.quants.dequantize, and records the bytes (hex) and the
f32 results (as hex bit patterns, so the test compares exactly). tests/core_block_formats_test.cpp checks kiln's
dequantize_blocks against these values bit for bit.

Usage: python3 tools/make_block_format_goldens.py --out tests/fixtures/io/block_formats.json
Needs: pip install gguf numpy (tested with gguf 0.19.0).
"""
import argparse
import json
import struct

import numpy as np
from importlib.metadata import version
from gguf.quants import dequantize
from gguf.constants import GGMLQuantizationType as T, GGML_QUANT_SIZES

# (type, offsets of the f16 scale fields inside a block)
TYPES = [
    ("q8_0", T.Q8_0, [0]),
    ("q4_0", T.Q4_0, [0]),
    ("q4_1", T.Q4_1, [0, 2]),
    ("q5_0", T.Q5_0, [0]),
    ("q5_1", T.Q5_1, [0, 2]),
    ("q4_k", T.Q4_K, [0, 2]),
    ("q5_k", T.Q5_K, [0, 2]),
    ("q6_k", T.Q6_K, [208]),
]
BLOCKS = 3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    cases = []
    for name, qtype, scale_offsets in TYPES:
        block_values, block_bytes = GGML_QUANT_SIZES[qtype]
        raw = bytearray(rng.integers(0, 256, size=BLOCKS * block_bytes, dtype=np.uint8).tobytes())
        for b in range(BLOCKS):
            for off in scale_offsets:
                v = np.float16(rng.uniform(-0.05, 0.05))
                struct.pack_into("<e", raw, b * block_bytes + off, float(v))
        data = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(1, -1)
        values = dequantize(data, qtype).astype(np.float32).reshape(-1)
        assert values.size == BLOCKS * block_values
        cases.append({
            "type": name,
            "values": int(values.size),
            "bytes_hex": bytes(raw).hex(),
            "f32_bits": [format(int(x), "08x") for x in values.view(np.uint32)],
        })
    doc = {"source": "gguf-py " + version("gguf") + ", gguf.quants.dequantize",
           "seed": args.seed, "cases": cases}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
