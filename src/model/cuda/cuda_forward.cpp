// The recipe's operations on the CUDA kernels: cuBLASLt GEMMs (the residual added in the epilogue), norms into 16 bits
// or accumulated into the fp32 residual, RoPE fused with the paged K/V write, split-K decode and flash prefill
// attention, gated activations; then the tail (final norm, lm_head, sampling).
#include "model/cuda/cuda_model_impl.h"

#ifdef KILN_HAVE_CUDA

#include <cmath>

namespace kiln {
namespace {

cuda::Act to_cuda(ActKind a) {
  switch (a) {
    case ActKind::SiLU: return cuda::Act::SiLU;
    case ActKind::GeluTanh: return cuda::Act::GeluTanh;
    case ActKind::GeluErf: return cuda::Act::GeluErf;
  }
  return cuda::Act::SiLU;
}

}  // namespace

CudaOps::CudaOps(const ModelConfig& c, const CudaDecoderModel::Impl& m, cudadev::CudaWorkspace& ws,
                 const cudadev::KvLayout& kv, const cudadev::StepMeta& meta, bool gemms_only)
    : c_(c), m_(m), ws_(ws), kv_(kv), meta_(meta), gemms_only_(gemms_only) {
  nq_ = c.num_heads * c.head_dim;
  nkv_ = c.num_kv_heads * c.head_dim;
  ld_qkv_ = nq_ + 2 * nkv_;
}

void* CudaOps::buf(Buf b) const {
  switch (b) {
    case Buf::X: return ws_.x.p;
    case Buf::H: return ws_.h.p;
    case Buf::QKV: return ws_.qkv.p;
    case Buf::Att: return ws_.att.p;
    case Buf::MlpIn: return ws_.mlp_in.p;
    case Buf::Act: return ws_.act.p;
    case Buf::Y: return ws_.y.p;
  }
  KILN_ASSERT(false);
}

void CudaOps::embed(const Linear& table, float scale, const void* positions) {
  if (gemms_only_) return;
  m_.mark("embed");
  cuda::embedding_f32(m_.et, table.weight, c_.vocab_size, c_.hidden_size, meta_.ids, meta_.T, scale, positions,
                      c_.max_position_embeddings, meta_.pos, ws_.x.as<float>(), m_.stream);
}

void CudaOps::norm(const NormWeights& n, Buf in, Buf out, bool accumulate) {
  if (gemms_only_) return;
  // Into H: the compute type (a GEMM's input); into X or Y: fp32 (the residual stream, or the embedding norm).
  const cuda::ElemType ot = out == Buf::H ? m_.et : cuda::ElemType::F32;
  m_.mark("norm");
  cuda::norm_f32(ot, c_.norm == NormKind::LayerNorm, static_cast<const float*>(buf(in)), n.w, n.b, buf(out), meta_.T,
                 c_.hidden_size, static_cast<float>(c_.norm_eps), c_.norm_add_one, accumulate, nullptr, m_.stream);
}

void CudaOps::linear(const Linear& w, Buf in, Buf out, bool accumulate) {
  KILN_CHECK(w.format.weight == DType::BF16 || w.format.weight == DType::F16,
             "CUDA linear: {} weights have no kernel yet", format_name(w.format));
  // The output type by buffer: q|k|v in the compute type (RoPE reads it), the residual stream and Y in fp32, the MLP
  // input in fp32 or, for mlp16 layers, the compute type. The bias is stored in the output's type.
  cuda::ElemType ot = cuda::ElemType::F32;
  const char* op = "o_gemm";
  if (out == Buf::QKV) {
    ot = m_.et, op = "qkv_gemm";
  } else if (out == Buf::MlpIn) {
    mlp_in_16_ = m_.mlp16 && w.bias == nullptr;
    ot = mlp_in_16_ ? m_.et : cuda::ElemType::F32;
    op = "mlp_in_gemm";
  } else if (in == Buf::Act) {
    op = "down_gemm";
  }
  KILN_ASSERT(w.bias == nullptr || (w.bias_dtype == DType::F32) == (ot == cuda::ElemType::F32));
  m_.mark(op);
  void* y = buf(out);
  m_.gemm->run(m_.et, ot, buf(in), meta_.T, w.in, w.weight, w.out, w.bias, accumulate ? y : nullptr, y, m_.stream);
}

void CudaOps::clamp(Buf b, float limit) {
  if (gemms_only_) return;
  KILN_ASSERT(b == Buf::QKV);
  m_.mark("clamp");
  cuda::clamp(m_.et, ws_.qkv.p, meta_.T * ld_qkv_, -limit, limit, m_.stream);
}

void CudaOps::rope_kv_write(const LayerWeights& L, int64_t layer, bool rotary) {
  if (gemms_only_) return;
  cuda::RopeKvArgs r;
  r.num_tokens = meta_.T;
  r.num_heads = static_cast<int32_t>(c_.num_heads);
  r.num_kv_heads = static_cast<int32_t>(c_.num_kv_heads);
  r.head_dim = static_cast<int32_t>(c_.head_dim);
  r.rotary_dim = rotary ? static_cast<int32_t>(c_.rope.rotary_dim) : 0;  // 0: only the K/V write
  r.interleaved = c_.rope.interleaved;
  r.ld_qkv = ld_qkv_;
  r.positions = meta_.pos;
  r.inv_freq = rotary ? m_.inv_freq.as<double>() : nullptr;
  r.slot_mapping = meta_.slots;
  r.k_cache = kv_.k(layer);
  r.v_cache = kv_.v(layer);
  r.block_size = kv_.block_size;
  r.block_stride = kv_.block_stride;
  r.q_norm = static_cast<const uint16_t*>(L.q_norm);
  r.k_norm = static_cast<const uint16_t*>(L.k_norm);
  r.qk_norm_eps = static_cast<float>(c_.norm_eps);
  r.kv_fp8 = m_.kv_fp8;
  m_.mark("rope_kv");
  cuda::rope_kv_write(m_.et, ws_.qkv.p, r, m_.stream);
}

void CudaOps::attention(const AttentionParams& p) {
  if (gemms_only_) return;
  const uint16_t* qkv = ws_.qkv.as<uint16_t>();
  uint16_t* att = ws_.att.as<uint16_t>();
  cuda::AttentionShape shape;
  shape.num_heads = static_cast<int32_t>(c_.num_heads);
  shape.num_kv_heads = static_cast<int32_t>(c_.num_kv_heads);
  shape.head_dim = static_cast<int32_t>(c_.head_dim);
  shape.scale = p.scale;
  shape.softcap = p.softcap;
  shape.alibi_slopes = p.alibi ? m_.alibi_slopes.as<float>() : nullptr;
  shape.window = static_cast<int32_t>(p.window);
  shape.kv_fp8 = m_.kv_fp8;
  cuda::PagedKv kv;
  kv.k_cache = kv_.k(p.layer);
  kv.v_cache = kv_.v(p.layer);
  kv.max_blocks_per_seq = static_cast<int32_t>(meta_.mb);
  kv.block_size = kv_.block_size;
  kv.block_stride = kv_.block_stride;
  if (meta_.nd > 0) {
    cuda::DecodePlan plan = cuda::plan_decode_attention(shape, static_cast<int32_t>(meta_.nd),
                                                        static_cast<int32_t>(meta_.max_kv_decode), m_.num_sms);
    if (plan.workspace_bytes > ws_.decode_ws.bytes)
      plan = cuda::plan_decode_attention(shape, static_cast<int32_t>(meta_.nd),
                                         static_cast<int32_t>(meta_.max_kv_decode), m_.num_sms, 1);
    kv.block_tables = meta_.tab;
    kv.kv_lens = meta_.lens;
    m_.mark("attn_decode");
    cuda::decode_attention(m_.et, plan, shape, qkv, ld_qkv_, kv, att, nq_, ws_.decode_ws.p, m_.stream);
  }
  if (meta_.np > 0) {
    const cuda::PrefillPlan plan =
        cuda::plan_prefill_attention(shape, static_cast<int32_t>(meta_.np), static_cast<int32_t>(meta_.max_q));
    kv.block_tables = meta_.tab + meta_.nd * meta_.mb;
    kv.kv_lens = meta_.lens + meta_.nd;
    m_.mark("attn_prefill");
    cuda::prefill_attention(m_.et, plan, shape, qkv + meta_.row0_p * ld_qkv_, ld_qkv_, meta_.cu, kv,
                            att + meta_.row0_p * nq_, nq_, m_.stream);
  }
}

void CudaOps::activation() {
  if (gemms_only_) return;
  const int64_t In = c_.intermediate_size, n_in = c_.gated_mlp ? 2 * In : In;
  uint16_t* a = ws_.act.as<uint16_t>();
  m_.mark("activation");
  if (mlp_in_16_) {
    const uint16_t* mi = ws_.mlp_in.as<uint16_t>();
    cuda::gated_activation(m_.et, mi, mi + In, a, meta_.T, In, n_in, to_cuda(c_.act), m_.stream);
  } else {
    cuda::activation_f32(m_.et, ws_.mlp_in.as<float>(), n_in, a, meta_.T, In, to_cuda(c_.act), c_.gated_mlp,
                         m_.stream);
  }
}

void CudaOps::final_norm(const NormWeights& n) {
  m_.mark("final_norm");
  cuda::norm_f32(m_.et, c_.norm == NormKind::LayerNorm, ws_.x.as<float>(), n.w, n.b, ws_.h.p, meta_.R, c_.hidden_size,
                 static_cast<float>(c_.norm_eps), c_.norm_add_one, false, meta_.rows, m_.stream);
}

void CudaOps::lm_head(const Linear& w, int64_t r0, int64_t rows) {
  const int64_t H = c_.hidden_size, V = c_.vocab_size;
  m_.mark("lm_head");
  m_.gemm->run(m_.et, cuda::ElemType::F32, ws_.h.as<uint16_t>() + r0 * H, rows, H, w.weight, V, w.bias, nullptr,
               ws_.logits.p, m_.stream);
  if (c_.final_logit_softcap > 0)
    cuda::softcap(ws_.logits.as<float>(), rows * V, static_cast<float>(c_.final_logit_softcap), m_.stream);
}

void CudaOps::sample(int64_t r0, int64_t rows, int32_t top_k) {
  cuda::SampleArgs a;
  a.logits = ws_.logits.as<float>();
  a.rows = rows;
  a.vocab = c_.vocab_size;
  a.params = ws_.samp_params() + r0;
  a.info = ws_.samp_info(meta_.R) + r0;
  a.penalties = ws_.samp_pens();
  a.penalty_scratch = ws_.samp_scratch();
  a.top_k = top_k;
  a.tokens = ws_.out_tokens() + r0;
  a.token_logprobs = ws_.out_logprobs() + r0;
  a.top_ids = ws_.out_top_ids() + r0 * top_k;
  a.top_logprobs = ws_.out_top_logprobs() + r0 * top_k;
  m_.mark("sample");
  cuda::sample(a, m_.stream);
}

}  // namespace kiln

#endif  // KILN_HAVE_CUDA
