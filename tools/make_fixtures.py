#!/usr/bin/env python3
"""Writes tiny random Hugging Face checkpoints and their float64 transformers references.

For each fixture below, under OUT/<name>/: config.json + model.safetensors (random weights, scaled so
logits are far from flat, stored in the fixture's dtype) and reference.json. The reference is computed
by transformers in float64 from the checkpoint as saved, loaded as a user loads it:
from_pretrained(OUT/<name>, dtype=torch.float64), never the in-memory model that was cast to bf16/f16 for
saving (that cast also rounds buffers such as RoPE's inv_freq, which inference computes from config.json in
f32). So the stored values, bf16/f16 rounding included, are the model, and every buffer is what inference
computes; the one adjustment is Gemma's embedding scale, rounded to the stored dtype as inference at that
dtype (and kiln) has it (round_embed_scale). Eager attention, no KV cache (every step recomputes the whole
sequence). For prompts of 1, 7 and 33 random token ids (a fixture's "prompts" may add more) it records the
greedy continuation (16 tokens) and, per step, the chosen token's logprob and the top-5 ids and logprobs
(log_softmax in float64). Prompts are redrawn until every step's top-2 margin is clear, so fp32 engines
must reproduce the greedy ids exactly. tests/model_fixtures_test.cpp checks kiln against these files, and
tests/gpu/cuda_fixtures_test.cpp the CUDA backend.

Usage: python3 tools/make_fixtures.py --out tests/fixtures/models [--only NAME[,NAME...] ...]
(--only keeps every other fixture under OUT untouched, byte for byte.)
Needs torch and transformers (tested with transformers 5.x; written to work with 4.4x too).
"""
import argparse
import inspect
import json
import math
import os
import random
import shutil
import sys

import torch
import transformers

PROMPT_LENGTHS = [1, 7, 33]  # a fixture's "prompts" key replaces these
STEPS = 16
MIN_MARGIN = 0.02  # logprob gap between the top-2 tokens at every generated step
PROMPT_TRIES = 60

FIXTURES = [
    # Llama-2 style: multi-head attention, untied head, f32.
    dict(name="llama2-mha-f32", cls="LlamaForCausalLM", dtype="float32", seed=11,
         config=dict(vocab_size=389, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0,
                     max_position_embeddings=128, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)),
    # Llama-3 style: GQA, llama3 RoPE scaling with a short original context so all three frequency
    # bands (kept, blended, divided) occur at head_dim 16; tied embeddings; bf16.
    dict(name="llama3-gqa-bf16", cls="LlamaForCausalLM", dtype="bfloat16", seed=12,
         config=dict(vocab_size=1013, hidden_size=64, intermediate_size=172, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                     max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=1, eos_token_id=[2, 3],
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    # MQA (one KV head), linear RoPE scaling, attention and MLP biases, f16.
    dict(name="llama-mqa-f16", cls="LlamaForCausalLM", dtype="float16", seed=13,
         config=dict(vocab_size=500, hidden_size=96, intermediate_size=200, num_hidden_layers=2,
                     num_attention_heads=6, num_key_value_heads=1, rms_norm_eps=1e-6, rope_theta=10000.0,
                     max_position_embeddings=256, tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
                     rope_scaling={"rope_type": "linear", "factor": 2.0})),
    # Mistral: a sliding window (8) much shorter than prompt + generation (up to 49 tokens).
    dict(name="mistral-swa", cls="MistralForCausalLM", dtype="float32", seed=14,
         config=dict(vocab_size=431, hidden_size=64, intermediate_size=150, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                     max_position_embeddings=256, sliding_window=8, tie_word_embeddings=False)),
    # Qwen2: q/k/v biases, tied embeddings; a sliding_window that must be ignored (use_sliding_window false).
    dict(name="qwen2-tied-bias", cls="Qwen2ForCausalLM", dtype="bfloat16", seed=15,
         config=dict(vocab_size=389, hidden_size=48, intermediate_size=112, num_hidden_layers=2,
                     num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1000000.0,
                     max_position_embeddings=256, tie_word_embeddings=True, use_sliding_window=False,
                     sliding_window=4, max_window_layers=2)),
    # Qwen3: per-head q/k RMSNorm, head_dim (16) != hidden / heads (12).
    dict(name="qwen3-qknorm", cls="Qwen3ForCausalLM", dtype="float32", seed=16,
         config=dict(vocab_size=1013, hidden_size=48, intermediate_size=136, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                     rope_theta=1000000.0, max_position_embeddings=256, tie_word_embeddings=False)),

    # --- the model zoo (issue 3) ---
    # GPT-2: learned positions (n_positions 64 >= 49 tokens used), Conv1D [in, out] weights, fused c_attn,
    # gelu_new, tied embeddings; MHA, f32.
    dict(name="gpt2-learned-f32", cls="GPT2LMHeadModel", dtype="float32", seed=21,
         config=dict(vocab_size=397, n_embd=48, n_layer=2, n_head=4, n_positions=64, activation_function="gelu_new",
                     layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)),
    # GPT-J: parallel attention + MLP from one LayerNorm, interleaved rotary on 8 of 16 head dims, lm_head
    # bias, untied; f16.
    dict(name="gptj-rotary-f16", cls="GPTJForCausalLM", dtype="float16", seed=22,
         config=dict(vocab_size=443, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=128,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=False,
                     bos_token_id=1, eos_token_id=2)),
    # GPT-NeoX, parallel residual: fused per-head qkv, rotary on half of each 12-dim head; bf16.
    dict(name="neox-parallel-bf16", cls="GPTNeoXForCausalLM", dtype="bfloat16", seed=23,
         config=dict(vocab_size=509, hidden_size=48, intermediate_size=160, num_hidden_layers=2,
                     num_attention_heads=4, partial_rotary_factor=0.5, rope_theta=10000.0, use_parallel_residual=True,
                     hidden_act="gelu", layer_norm_eps=1e-5, max_position_embeddings=128,
                     tie_word_embeddings=False)),
    # GPT-NeoX, sequential residual, rotary on a quarter of each head (Pythia's 0.25), theta 5000; f32.
    dict(name="neox-sequential-f32", cls="GPTNeoXForCausalLM", dtype="float32", seed=24,
         config=dict(vocab_size=311, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                     num_attention_heads=4, partial_rotary_factor=0.25, rope_theta=5000.0,
                     use_parallel_residual=False, hidden_act="gelu", layer_norm_eps=1e-5,
                     max_position_embeddings=128, tie_word_embeddings=False)),
    # Falcon-7B layout: multi-query (1 KV head), parallel attention + MLP from one LayerNorm, no biases,
    # tied embeddings; bf16.
    dict(name="falcon-7b-mqa-bf16", cls="FalconForCausalLM", dtype="bfloat16", seed=25,
         config=dict(vocab_size=467, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
                     parallel_attn=True, new_decoder_architecture=False, alibi=False, bias=False,
                     rope_theta=10000.0, layer_norm_epsilon=1e-5, max_position_embeddings=128,
                     tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)),
    # Falcon new_decoder_architecture (40B/180B layout): grouped KV (4 heads, 2 KV heads) in the fused
    # [kv, group + 2, head_dim] qkv, ln_attn + ln_mlp, biases on, untied; f16.
    dict(name="falcon-newarch-gqa-f16", cls="FalconForCausalLM", dtype="float16", seed=26,
         config=dict(vocab_size=401, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                     new_decoder_architecture=True, multi_query=False, parallel_attn=True, alibi=False, bias=True,
                     ffn_hidden_size=176, rope_theta=10000.0, layer_norm_epsilon=1e-5,
                     max_position_embeddings=128, tie_word_embeddings=False)),
    # MPT: ALiBi with 6 heads (not a power of two: interleaved slopes), clip_qkv, bias-free LayerNorms and
    # projections, tied embeddings; f32.
    dict(name="mpt-alibi-clip-f32", cls="MptForCausalLM", dtype="float32", seed=27,
         config=dict(vocab_size=353, d_model=48, n_heads=6, n_layers=2, expansion_ratio=4, max_seq_len=64,
                     layer_norm_epsilon=1e-5, no_bias=True,
                     attn_config=dict(alibi=True, alibi_bias_max=8, clip_qkv=1.5), tie_word_embeddings=True)),
    # BLOOM: ALiBi with 6 heads, LayerNorm on the embeddings, fused per-head qkv with biases; bf16.
    dict(name="bloom-alibi-bf16", cls="BloomForCausalLM", dtype="bfloat16", seed=28,
         config=dict(vocab_size=421, hidden_size=48, n_layer=2, n_head=6, layer_norm_epsilon=1e-5,
                     apply_residual_connection_post_layernorm=False, tie_word_embeddings=True)),
    # Gemma: MQA, head_dim 16 != 48 / 4, GeGLU (tanh), (1 + w) RMSNorm, tied embeddings scaled by sqrt(48),
    # which HF rounds to bf16 (6.9375); bf16.
    dict(name="gemma-mqa-bf16", cls="GemmaForCausalLM", dtype="bfloat16", seed=29,
         config=dict(vocab_size=613, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=1, head_dim=16, hidden_act="gelu_pytorch_tanh",
                     rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=128, tie_word_embeddings=True,
                     bos_token_id=2, eos_token_id=1, pad_token_id=0)),
    # Gemma 2: GQA 4/2, sliding window 6 on layers 0 and 2, attention and final soft-capping small enough to
    # bite (4 and 6), query_pre_attn_scalar 24 != head_dim 16, pre and post norms; f32.
    dict(name="gemma2-gqa-f32", cls="Gemma2ForCausalLM", dtype="float32", seed=30,
         config=dict(vocab_size=541, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_activation="gelu_pytorch_tanh",
                     rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=128, query_pre_attn_scalar=24,
                     attn_logit_softcapping=4.0, final_logit_softcapping=6.0, sliding_window=6,
                     tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0)),
    # Phi-3: fused qkv_proj (GQA 4/2) and gate_up_proj, sliding window 10; f16.
    dict(name="phi3-fused-f16", cls="Phi3ForCausalLM", dtype="float16", seed=31,
         config=dict(vocab_size=487, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                     max_position_embeddings=128, original_max_position_embeddings=128, sliding_window=10,
                     tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)),

    # --- real head sizes (issue 19): head_dim 64, 128 and 256, so the CUDA backend's tensor-core attention
    # (mma.sync decode and prefill, wgmma prefill at 128 on compute capability 9.0, the fp8 KV paths) meets the
    # reference; every fixture above has head_dim 12 or 16 (the generic kernel). Hidden 64 keeps each checkpoint
    # near 0.5 MB at these head sizes. A fourth prompt of 150 tokens (166 with the generation) spans 11 KV blocks
    # of 16 and makes the CUDA decode split each sequence's keys over several CTAs (split-K).
    # Llama-3.1 style: GQA 4/2 at head_dim 128, theta 5e5, llama3 RoPE scaling (original context 64: at
    # head_dim 128 the first 5 frequencies are kept, the next 7 blended, the rest divided by 8), untied; bf16.
    dict(name="llama3-gqa-hd128-bf16", cls="LlamaForCausalLM", dtype="bfloat16", seed=41, prompts=[1, 7, 33, 150],
         config=dict(vocab_size=307, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=128, rms_norm_eps=1e-5,
                     rope_theta=500000.0, max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1,
                     eos_token_id=2,
                     rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    # Llama-3.2-1B style: GQA 8/2 (4 query heads per KV head) at head_dim 64; f16. (The head-size fixtures
    # are untied: a tied head with these weights makes greedy decoding repeat the last token.)
    dict(name="llama-gqa-hd64-f16", cls="LlamaForCausalLM", dtype="float16", seed=42, prompts=[1, 7, 33, 150],
         config=dict(vocab_size=331, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5,
                     rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1,
                     eos_token_id=2)),
    # Gemma 2 style at head_dim 256 (as gemma-2-2b/9b): 2 query heads on 1 KV head, query_pre_attn_scalar 256,
    # attention / final soft-caps 8 / 10 (small enough to bite), a sliding window of 100 on layer 0 (only the
    # 150-token prompt outgrows it: windowed prefill and split-K decode), pre and post norms, untied. Hidden 64
    # makes the embedding scale sqrt(64) = 8 exact in every dtype; bf16.
    dict(name="gemma2-hd256-bf16", cls="Gemma2ForCausalLM", dtype="bfloat16", seed=43, prompts=[1, 7, 33, 150],
         config=dict(vocab_size=263, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=256,
                     hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6, rope_theta=10000.0,
                     max_position_embeddings=256, query_pre_attn_scalar=256, attn_logit_softcapping=8.0,
                     final_logit_softcapping=10.0, sliding_window=100, tie_word_embeddings=False, bos_token_id=2,
                     eos_token_id=1, pad_token_id=0)),
    # MQA at head_dim 128: 8 query heads on one KV head (gemma-2b's group), untied; f16.
    dict(name="llama-mqa-hd128-f16", cls="LlamaForCausalLM", dtype="float16", seed=44, prompts=[1, 7, 33, 150],
         config=dict(vocab_size=257, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=1, head_dim=128, rms_norm_eps=1e-6,
                     rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=False, bos_token_id=1,
                     eos_token_id=2)),
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_config(cfg_cls, kw):
    """The config, with RoPE given the way this transformers version spells it (rope_parameters in 5.x)."""
    kw = dict(kw)
    if "rope_theta" not in kw:  # no RoPE (GPT-2, MPT, BLOOM) or a fixed one (GPT-J)
        return cfg_cls(**kw)
    scaling = kw.pop("rope_scaling", None)
    theta = kw.pop("rope_theta")
    partial = kw.pop("partial_rotary_factor", None)
    if hasattr(cfg_cls(), "rope_parameters"):
        params = {"rope_type": "default", "rope_theta": theta}
        if scaling:
            params.update(scaling)
        if partial is not None:
            params["partial_rotary_factor"] = partial
        kw["rope_parameters"] = params
    else:
        kw["rope_theta"] = theta
        if scaling:
            kw["rope_scaling"] = scaling
        if partial is not None:
            kw["rotary_pct" if "NeoX" in cfg_cls.__name__ else "partial_rotary_factor"] = partial
    return cfg_cls(**kw)


EMBEDDING_NAMES = ("embed_tokens", "lm_head", "wte", "wpe", "word_embeddings.", "embed_in", "embed_out")


def init_weights(model, seed):
    """Random weights scaled for unit-size activations and peaked logits (std ~2.5 logits).

    Norm weights (any 1-D weight) are 1 + 0.2 r, biases 0.2 r, embeddings and heads 2.5 r / sqrt(hidden),
    other matrices r / sqrt(fan_in); GPT-2's Conv1D stores [in, out], so its fan-in is shape[0]. (The rules
    give the first six fixtures exactly the values they were made with.)"""
    g = torch.Generator().manual_seed(seed)
    conv1d = {name + ".weight" for name, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.endswith("norm.weight") or (p.dim() == 1 and not name.endswith(".bias")):
                v = 1.0 + 0.2 * r
            elif name.endswith(".bias"):
                v = 0.2 * r
            elif any(e in name for e in EMBEDDING_NAMES):
                v = r * (2.5 / math.sqrt(p.shape[1]))
            else:
                v = r / math.sqrt(p.shape[0] if name in conv1d else p.shape[1])
            p.copy_(v.to(p.dtype))


def save(model, out_dir):
    params = inspect.signature(model.save_pretrained).parameters
    kw = {"safe_serialization": True} if "safe_serialization" in params else {}
    model.save_pretrained(out_dir, **kw)
    for f in os.listdir(out_dir):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(out_dir, f))


def dtype_kwarg(dtype):
    """from_pretrained's keyword for the load dtype: `dtype` since transformers 4.56, `torch_dtype` before."""
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": dtype}


def load_as_user(model_cls, out_dir, dtype):
    """The saved checkpoint loaded as a user loads it: from_pretrained(out_dir, dtype=dtype), eager attention.

    Loading in the target dtype (rather than loading in the stored dtype and calling .to(dtype) afterwards, or
    using the in-memory model that was cast to bf16/f16 before saving) lets transformers build every buffer the
    way real inference does: RoPE's inv_freq is computed from config.json in f32 (and the angles stay f32 in its
    forward), Gemma's embedding scale is sqrt(hidden) in the load dtype. A `.to(dtype)` cast would instead round
    such buffers along with the weights (inv_freq to 8 bits of mantissa under .to(bf16))."""
    model = model_cls.from_pretrained(out_dir, attn_implementation="eager", **dtype_kwarg(dtype))
    for name, p in model.named_parameters():
        assert p.dtype == dtype, f"{name} loaded as {p.dtype}, not {dtype}"
    return model.eval()


def round_embed_scale(model, stored_dtype):
    """Gemma's embedding scale sqrt(hidden), rounded to the checkpoint's stored dtype.

    transformers multiplies the embeddings by sqrt(hidden) converted to the weights' dtype in memory, so the
    value depends on the load dtype: sqrt(48) is 6.9375 when a bf16 checkpoint runs in bf16 (as it is used, and
    as the original Gemma code rounds it) but 6.92820 when it is loaded in float64. kiln rounds it to the stored
    dtype whatever it computes in (docs/models.md), so the reference does the same; the weights and every other
    buffer stay as from_pretrained(dtype=float64) gives them. (A no-op where sqrt(hidden) is exact, e.g. 64.)
    Returns the names of the buffers it set."""
    done = []
    for name, buf in model.named_buffers():
        if name.split(".")[-1] == "embed_scale":
            buf.copy_(buf.to(stored_dtype).to(buf.dtype))
            done.append(name)
    return done


def load_reference(model_cls, out_dir, stored_dtype, dtype):
    """The model a reference (float64) or the fp32 comparison run (float32) is computed with."""
    model = load_as_user(model_cls, out_dir, dtype)
    with torch.no_grad():
        rounded = round_embed_scale(model, stored_dtype)
    if not rounded and model_cls.__name__.startswith("Gemma"):
        # Older transformers compute the scale inside forward (no buffer to set).
        print(f"warning {model_cls.__name__}: no embed_scale buffer; the reference multiplies by sqrt(hidden) "
              f"in {dtype}, not rounded to {stored_dtype}", file=sys.stderr)
    return model


@torch.no_grad()
def greedy_reference(model, prompt):
    seq = list(prompt)
    steps = []
    margin = float("inf")
    for _ in range(STEPS):
        logits = model(input_ids=torch.tensor([seq])).logits[0, -1].to(torch.float64)
        lp = torch.log_softmax(logits, dim=-1)
        top = torch.topk(lp, 5)
        nxt = int(top.indices[0])
        margin = min(margin, float(top.values[0] - top.values[1]))
        steps.append({
            "token_id": nxt,
            "logprob": float(lp[nxt]),
            "top": [{"id": int(i), "logprob": float(v)} for v, i in zip(top.values, top.indices)],
        })
        seq.append(nxt)
    return steps, margin


@torch.no_grad()
def fp32_deviation(model_cls, out_dir, stored_dtype, cases):
    """Largest |logprob fp32 - fp64| over each case's full sequence: how much fp32 engines may differ."""
    m32 = load_reference(model_cls, out_dir, stored_dtype, torch.float32)
    m64 = load_reference(model_cls, out_dir, stored_dtype, torch.float64)
    worst = 0.0
    for c in cases:
        seq = c["prompt_ids"] + [s["token_id"] for s in c["steps"]]
        a = torch.log_softmax(m32(input_ids=torch.tensor([seq])).logits[0].double(), -1)
        b = torch.log_softmax(m64(input_ids=torch.tensor([seq])).logits[0].double(), -1)
        worst = max(worst, float((a - b).abs().max()))
    return worst


def build(fx, root):
    if not hasattr(transformers, fx["cls"]):
        print(f"skip {fx['name']}: transformers {transformers.__version__} has no {fx['cls']}", file=sys.stderr)
        return None
    model_cls = getattr(transformers, fx["cls"])
    cfg = make_config(model_cls.config_class, fx["config"])
    torch.manual_seed(fx["seed"])
    model = model_cls(cfg).to(torch.float32)
    init_weights(model, fx["seed"])
    model = model.to(DTYPES[fx["dtype"]])
    out_dir = os.path.join(root, fx["name"])
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    save(model, out_dir)

    ref_model = load_reference(model_cls, out_dir, DTYPES[fx["dtype"]], torch.float64)
    # The reloaded model must hold exactly the stored values.
    stored = {k: v.to(torch.float64) for k, v in model.state_dict().items()}
    for k, v in ref_model.state_dict().items():
        if k in stored:
            assert torch.equal(stored[k], v), f"{fx['name']}: {k} changed on reload"

    rng = random.Random(fx["seed"] * 1000 + 7)
    vocab = cfg.vocab_size
    cases = []
    for n in fx.get("prompts", PROMPT_LENGTHS):
        best = None
        for attempt in range(PROMPT_TRIES):
            prompt = [rng.randrange(vocab) for _ in range(n)]
            steps, margin = greedy_reference(ref_model, prompt)
            if best is None or margin > best[2]:
                best = (prompt, steps, margin)
            if margin >= MIN_MARGIN:
                break
        prompt, steps, margin = best
        if margin < MIN_MARGIN:
            print(f"warning {fx['name']}: prompt of {n} tokens has top-2 margin {margin:.4f}", file=sys.stderr)
        cases.append({"prompt_ids": prompt, "steps": steps, "min_margin": margin})
        print(f"{fx['name']}: prompt {n} tokens -> {[s['token_id'] for s in steps]} (margin {margin:.3f})")

    ref = {
        "fixture": fx["name"],
        "architecture": fx["cls"],
        "stored_dtype": fx["dtype"],
        "reference_dtype": "float64",
        "attn_implementation": "eager",
        "loaded_with": "from_pretrained(dtype=torch.float64); embed_scale, where present, rounded to stored_dtype",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "steps": STEPS,
        "fp32_max_logprob_deviation": fp32_deviation(model_cls, out_dir, DTYPES[fx["dtype"]], cases),
        "config": {k: v for k, v in fx["config"].items()},
        "cases": cases,
    }
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    with open(os.path.join(out_dir, "config.json")) as f:
        saved = json.load(f)
    print(f"{fx['name']}: config.json keys: {sorted(saved)}; fp32 deviation {ref['fp32_max_logprob_deviation']:.2e}")
    return out_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder that receives one sub-folder per fixture")
    ap.add_argument("--only", nargs="*", help="fixture names to (re)make (space or comma separated)")
    args = ap.parse_args()
    if args.only:
        args.only = [n for item in args.only for n in item.split(",") if n]
        unknown = sorted(set(args.only) - {fx["name"] for fx in FIXTURES})
        if unknown:
            ap.error("unknown fixture(s): " + ", ".join(unknown))
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    os.makedirs(args.out, exist_ok=True)
    failed = []
    for fx in FIXTURES:
        if args.only and fx["name"] not in args.only:
            continue
        try:
            build(fx, args.out)
        except Exception as e:  # keep going: one broken fixture should not cost the others
            import traceback
            traceback.print_exc()
            failed.append(fx["name"])
    if failed:
        print("FAILED:", ", ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
