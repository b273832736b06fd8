#!/usr/bin/env python3
"""Writes the Hugging Face reference for the default model (SmolLM2-135M-Instruct Q4_1 GGUF).

transformers loads the GGUF (dequantizing its tensors and converting its vocabulary to an HF
tokenizer), the model runs in float64, and for a few prompts we record: the HF token ids of the
prompt, the greedy continuation, and per step the chosen token's logprob and the top-5 logprobs.
tests/cli/default_model.sh compares `kiln generate --json` against this file.

Usage: python3 tools/make_default_model_reference.py --gguf PATH --out tests/fixtures/default-model/reference.json
Needs torch, transformers, gguf (PyPI).
"""
import argparse
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "Gravity is",
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
    "Les chats sont",
]
STEPS = 24


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = model.to(torch.float64).eval()
    cases = []
    for prompt in PROMPTS:
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        seq = list(ids)
        steps = []
        with torch.no_grad():
            for _ in range(STEPS):
                logits = model(torch.tensor([seq])).logits[0, -1]
                lp = torch.log_softmax(logits, dim=-1)
                top = torch.topk(lp, 5)
                nxt = int(torch.argmax(logits))
                steps.append({
                    "token_id": nxt,
                    "logprob": float(lp[nxt]),
                    "top": [{"id": int(i), "logprob": float(v)} for v, i in zip(top.values, top.indices)],
                })
                seq.append(nxt)
        cases.append({"prompt": prompt, "prompt_ids": ids, "steps": steps,
                      "text": tok.decode(seq[len(ids):], skip_special_tokens=True)})
        print(repr(prompt), "->", repr(cases[-1]["text"]))
    out = {"model": name, "transformers": transformers.__version__, "torch": torch.__version__,
           "dtype": "float64", "cases": cases}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
