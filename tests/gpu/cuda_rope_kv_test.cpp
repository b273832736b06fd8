// RoPE fused with the paged KV write (both kernels: the vectorized one for half-split rotary widths of 16k over
// aligned rows, the staged one for the rest) agrees with cpu::rope (and cpu::rms_norm for q/k norms): q rotated in
// place, k rotated into its slot, v copied, and slots of skipped tokens left untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "cuda_test_util.h"
#include "kernels/cpu/ops.h"
#include "kiln/dtype.h"

namespace kiln {
namespace {

using cuda::ElemType;
using testing::DeviceBuffer;
using testing::Half16;

struct RopeCase {
  int H, Hkv, D, rotary;
  bool interleaved;
  RopeScaling scaling;
  bool qk_norm;
  int block_size;
  ElemType t;
  bool shared = false;  // K and V of a block side by side in one pool (block stride of two blocks)
  bool fp8 = false;     // an fp8 e4m3 cache (RopeKvArgs::kv_fp8)
};

void run_case(const RopeCase& c, std::mt19937& rng) {
  const int64_t T = 17;
  const int64_t row = static_cast<int64_t>(c.H + 2 * c.Hkv) * c.D;
  const Half16 qkv = testing::round16(testing::randn(T * row, rng), c.t);
  const Half16 qn = testing::round16(testing::randn(c.D, rng, 0.5f), c.t);
  const Half16 kn = testing::round16(testing::randn(c.D, rng, 0.5f), c.t);
  RopeConfig rc;
  rc.theta = 500000.0;
  rc.rotary_dim = c.rotary;
  rc.interleaved = c.interleaved;
  rc.scaling = c.scaling;
  rc.factor = 8.0;
  rc.original_max_position = 8192;
  const std::vector<double> inv = cpu::rope_inv_freq(rc, c.rotary);

  // Positions up to 1e5 (large angles) and a shuffled slot per token; token 5 is not written.
  std::vector<int32_t> pos(T), slots(T);
  std::vector<int64_t> pos64(T);
  std::uniform_int_distribution<int32_t> pick(0, 100000);
  for (int64_t t = 0; t < T; ++t) pos[t] = t < 3 ? static_cast<int32_t>(t) : pick(rng), pos64[t] = pos[t];
  const int num_blocks = (static_cast<int>(T) * 2 + c.block_size - 1) / c.block_size + 1;
  std::vector<int32_t> all(num_blocks * c.block_size);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  for (int64_t t = 0; t < T; ++t) slots[t] = all[t];
  slots[5] = -1;

  // CPU: optional per-head norms, then the rotation, on fp32 copies of the rounded q and k.
  std::vector<float> ref = qkv.f;
  if (c.qk_norm) {
    for (int64_t t = 0; t < T; ++t) {
      float* r = ref.data() + t * row;
      cpu::rms_norm(r, qn.f.data(), r, c.H, c.D, 1e-6f);
      cpu::rms_norm(r + c.H * c.D, kn.f.data(), r + c.H * c.D, c.Hkv, c.D, 1e-6f);
    }
  }
  std::vector<float> cs(T * c.rotary / 2), sn(T * c.rotary / 2);
  cpu::rope_tables(inv, pos64.data(), T, cs.data(), sn.data());
  cpu::rope(ref.data(), T, c.H, c.D, c.rotary, c.interleaved, cs.data(), sn.data(), row);
  cpu::rope(ref.data() + c.H * c.D, T, c.Hkv, c.D, c.rotary, c.interleaved, cs.data(), sn.data(), row);

  DeviceBuffer<uint16_t> dqkv(qkv.bits), dqn(qn.bits), dkn(kn.bits);
  const int64_t block_elems = static_cast<int64_t>(c.Hkv) * c.block_size * c.D;
  const int64_t stride = c.shared ? 2 * block_elems : block_elems;
  const int64_t v_base = c.shared ? block_elems : num_blocks * block_elems;
  DeviceBuffer<uint16_t> pool(c.fp8 ? 0 : static_cast<size_t>(2 * num_blocks * block_elems));
  DeviceBuffer<uint8_t> pool8(c.fp8 ? static_cast<size_t>(2 * num_blocks * block_elems) : 0);
  pool.poison();
  pool8.poison();  // 0xff: an e4m3 NaN
  DeviceBuffer<int32_t> dpos(pos), dslots(slots);
  DeviceBuffer<double> dinv(inv);
  cuda::RopeKvArgs a;
  a.num_tokens = T;
  a.num_heads = c.H;
  a.num_kv_heads = c.Hkv;
  a.head_dim = c.D;
  a.rotary_dim = c.rotary;
  a.interleaved = c.interleaved;
  a.positions = dpos.get();
  a.inv_freq = dinv.get();
  a.slot_mapping = dslots.get();
  if (c.fp8) {
    a.k_cache = pool8.get();
    a.v_cache = pool8.get() + v_base;
    a.kv_fp8 = true;
  } else {
    a.k_cache = pool.get();
    a.v_cache = pool.get() + v_base;
  }
  a.block_size = c.block_size;
  a.block_stride = c.shared ? stride : 0;
  if (c.qk_norm) a.q_norm = dqn.get(), a.k_norm = dkn.get();
  cuda::rope_kv_write(c.t, dqkv.get(), a, nullptr);

  const std::string what =
      std::string(testing::type_name(c.t)) + " H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) +
      " D=" + std::to_string(c.D) + " rot=" + std::to_string(c.rotary) + (c.interleaved ? " interleaved" : "") +
      (c.qk_norm ? " qk_norm" : "") + " bs=" + std::to_string(c.block_size) + (c.shared ? " shared" : "") +
      (c.fp8 ? " fp8" : "");
  const auto got = testing::to_float(dqkv.download(), c.t);
  std::vector<float> pg;
  if (c.fp8) {
    for (uint8_t b : pool8.download()) pg.push_back(testing::fp8_value(b));
  } else {
    pg = testing::to_float(pool.download(), c.t);
  }
  // What the cache should hold: the values, rounded to e4m3 for an fp8 cache.
  auto stored = [&](float x) { return c.fp8 ? round_to_fp8_e4m3(x) : x; };
  auto at = [&](int64_t s, int h, bool v) {
    return (v ? v_base : 0) + (s / c.block_size) * stride + (h * c.block_size + s % c.block_size) * c.D;
  };
  std::vector<float> gq, wq, gk, wk, gv, wv;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < c.H * c.D; ++i) gq.push_back(got[t * row + i]), wq.push_back(ref[t * row + i]);
    // k and v in qkv are left as they were
    for (int64_t i = c.H * c.D; i < row; ++i) ASSERT_EQ(got[t * row + i], qkv.f[t * row + i]) << what;
    for (int h = 0; h < c.Hkv; ++h) {
      const int64_t s = slots[t];
      if (s < 0) continue;
      for (int d = 0; d < c.D; ++d) {
        gk.push_back(pg[at(s, h, false) + d]), wk.push_back(stored(ref[t * row + (c.H + h) * c.D + d]));
        gv.push_back(pg[at(s, h, true) + d]), wv.push_back(stored(qkv.f[t * row + (c.H + c.Hkv + h) * c.D + d]));
      }
    }
  }
  EXPECT_LT(testing::rel_err(gq, wq), testing::tol16(c.t)) << what << " (q)";
  // fp8: the GPU rounds its own fp32 rotation, which may sit on the other side of an e4m3 rounding boundary
  // from the CPU's now and then (one e4m3 step, 2^-3 relative, in a few of thousands of values).
  EXPECT_LT(testing::rel_err(gk, wk), c.fp8 ? 1e-2 : testing::tol16(c.t)) << what << " (k)";
  EXPECT_EQ(testing::rel_err(gv, wv), 0.0) << what << " (v)";
  // Every slot nobody owns is still poisoned (NaN).
  std::vector<bool> owned(num_blocks * c.block_size, false);
  for (int32_t s : slots)
    if (s >= 0) owned[s] = true;
  for (int64_t s = 0; s < num_blocks * c.block_size; ++s) {
    if (owned[s]) continue;
    for (int h = 0; h < c.Hkv; ++h) {
      ASSERT_TRUE(std::isnan(pg[at(s, h, false)]) && std::isnan(pg[at(s, h, true) + c.D - 1])) << what << " slot " << s;
    }
  }
}

TEST(CudaRopeKv, MatchesCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(11);
  for (ElemType t : {ElemType::BF16, ElemType::F16})
    for (int bs : {1, 16}) {
      run_case({32, 8, 128, 128, false, RopeScaling::Llama3, false, bs, t}, rng);        // Llama 3
      run_case({8, 8, 64, 64, true, RopeScaling::None, false, bs, t}, rng);              // interleaved, MHA
      run_case({8, 1, 80, 40, false, RopeScaling::Linear, false, bs, t}, rng);           // partial, MQA
      run_case({16, 2, 96, 96, false, RopeScaling::None, true, bs, t}, rng);             // q/k norm (Qwen3)
      run_case({8, 4, 256, 64, true, RopeScaling::None, true, bs, t}, rng);              // partial interleaved 256
      run_case({32, 8, 128, 128, false, RopeScaling::Llama3, false, bs, t, true}, rng);  // K|V side by side
      // fp8 e4m3 caches
      run_case({32, 8, 128, 128, false, RopeScaling::Llama3, false, bs, t, false, true}, rng);
      run_case({16, 2, 96, 96, false, RopeScaling::None, true, bs, t, true, true}, rng);
      run_case({8, 4, 256, 64, true, RopeScaling::None, true, bs, t, false, true}, rng);
      // rows of 50 values (4-byte staging copies)
      run_case({3, 1, 10, 10, false, RopeScaling::None, false, bs, t}, rng);
      // The vectorized kernel beyond Llama's shape: q/k norms over 8 and 16 lanes per head (Qwen3, head_dim 256),
      // pass-through units (NeoX's 25% rotary), 6 units per head (Phi-3), 4 (head_dim 64), fp8 with norms.
      run_case({16, 2, 128, 128, false, RopeScaling::None, true, bs, t}, rng);
      run_case({8, 1, 256, 256, false, RopeScaling::None, true, bs, t, false, true}, rng);
      run_case({8, 8, 128, 32, false, RopeScaling::None, false, bs, t}, rng);
      run_case({12, 12, 96, 96, false, RopeScaling::None, false, bs, t, true}, rng);
      run_case({8, 2, 64, 64, false, RopeScaling::Linear, true, bs, t, false, true}, rng);
    }
}

}  // namespace
}  // namespace kiln
