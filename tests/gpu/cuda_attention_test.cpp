// Paged decode (split-K, GQA-grouped) and prefill (tensor cores, causal, chunked) attention agree with
// cpu::attention on odd batches, lengths, block sizes, GQA ratios, head dims, windows and both 16-bit types.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "cuda_test_util.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kiln/dtype.h"
#include "kiln/error.h"

namespace kiln {
namespace {

using cuda::ElemType;
using testing::DeviceBuffer;
using testing::fp8_bits;
using testing::fp8_value;
using testing::Half16;

// The host rounding the CPU backend stores an fp8 KV cache with is cuda_fp8.h's: over every float of a sweep
// across the e4m3 range (normals, subnormals, ties, values past 448), infinities and NaN.
TEST(Fp8E4m3, HostRoundingMatchesCudaFp8) {
  std::vector<float> xs = {0.0f, -0.0f, 448.0f, -448.0f, 464.0f, 1e9f, -1e9f, std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(), 0x1p-9f, 0x1p-10f, 3 * 0x1p-10f, 0x1p-6f,
                           1.0625f, 1.1875f, 1e-30f};
  for (float a = 0x1p-12f; a < 600.0f; a *= 1.0009765625f) {
    xs.push_back(a);
    xs.push_back(-a);
    xs.push_back(std::nextafter(a, 0.0f));
  }
  for (int b = 0; b < 256; ++b) {  // every e4m3 value and the midpoints between neighbours
    const float v = fp8_value(static_cast<uint8_t>(b));
    if (std::isnan(v)) continue;
    xs.push_back(v);
    const float w = fp8_value(static_cast<uint8_t>(b + 1 < 256 ? b + 1 : b));
    if (!std::isnan(w)) xs.push_back(0.5f * (v + w));
  }
  int bad = 0;
  for (float x : xs) {
    const float want = fp8_value(fp8_bits(x)), got = round_to_fp8_e4m3(x);
    if (!(want == got && std::signbit(want) == std::signbit(got)) && bad++ < 10)
      ADD_FAILURE() << "x=" << x << " cuda_fp8=" << want << " round_to_fp8_e4m3=" << got;
  }
  EXPECT_EQ(bad, 0) << "of " << xs.size();
  EXPECT_TRUE(std::isnan(round_to_fp8_e4m3(std::numeric_limits<float>::quiet_NaN())));
}

// Sequences in a shuffled block pool (the rounded values kept as floats for the CPU op). The pool holds K
// blocks then V blocks, or, with `shared`, K and V of each block side by side (block stride 2 blocks). With
// fp8 the pool holds e4m3 bytes (the floats are their values).
struct Paged {
  int num_seqs = 0, H = 0, Hkv = 0, D = 0, bs = 0, max_blocks = 0, num_blocks = 0;
  int64_t block_elems = 0, stride = 0, v_base = 0;
  bool fp8 = false;
  std::vector<int32_t> kv_lens, tables;
  Half16 pool;
  DeviceBuffer<uint16_t> dpool;
  DeviceBuffer<uint8_t> dpool8;
  DeviceBuffer<int32_t> dtables, dlens;

  Paged(const std::vector<int32_t>& lens, int H_, int Hkv_, int D_, int bs_, ElemType t, std::mt19937& rng,
        bool shared = false, bool fp8_ = false)
      : num_seqs(static_cast<int>(lens.size())), H(H_), Hkv(Hkv_), D(D_), bs(bs_), fp8(fp8_), kv_lens(lens) {
    int total = 0;
    for (int32_t l : lens) {
      max_blocks = std::max(max_blocks, (l + bs - 1) / bs);
      total += (l + bs - 1) / bs;
    }
    max_blocks += 1;  // a spare entry per row that must never be followed
    num_blocks = total + 3;
    std::vector<int32_t> ids(num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(static_cast<size_t>(num_seqs) * max_blocks, 0x3fffffff);
    int next = 0;
    for (int s = 0; s < num_seqs; ++s)
      for (int b = 0; b < (lens[s] + bs - 1) / bs; ++b) tables[s * max_blocks + b] = ids[next++];
    block_elems = static_cast<int64_t>(Hkv) * bs * D;
    stride = shared ? 2 * block_elems : block_elems;
    v_base = shared ? block_elems : num_blocks * block_elems;
    if (fp8) {
      const std::vector<float> x = testing::randn(static_cast<size_t>(2 * num_blocks * block_elems), rng);
      std::vector<uint8_t> bytes(x.size());
      pool.f.resize(x.size());
      for (size_t i = 0; i < x.size(); ++i) bytes[i] = fp8_bits(x[i]), pool.f[i] = fp8_value(bytes[i]);
      dpool8 = DeviceBuffer<uint8_t>(bytes);
    } else {
      pool = testing::round16(testing::randn(static_cast<size_t>(2 * num_blocks * block_elems), rng), t);
      dpool = DeviceBuffer<uint16_t>(pool.bits);
    }
    dtables = DeviceBuffer<int32_t>(tables);
    dlens = DeviceBuffer<int32_t>(kv_lens);
  }
  cuda::PagedKv kv() const {
    cuda::PagedKv p;
    if (fp8) {
      p.k_cache = dpool8.get();
      p.v_cache = dpool8.get() + v_base;
    } else {
      p.k_cache = dpool.get();
      p.v_cache = dpool.get() + v_base;
    }
    p.block_tables = dtables.get();
    p.max_blocks_per_seq = max_blocks;
    p.block_size = bs;
    p.block_stride = stride == block_elems ? 0 : stride;
    p.kv_lens = dlens.get();
    return p;
  }
  // The CPU op over the same (rounded) pools and tables: q rows [total, ldq], sequences back to back.
  void reference(const float* q, int64_t ldq, const std::vector<int32_t>& q_lens, int window, float scale,
                 const float* slopes, float softcap, float* out) const {
    std::vector<cpu::PagedSeq> seqs(num_seqs);
    int64_t begin = 0;
    for (int s = 0; s < num_seqs; ++s) {
      seqs[s] = {begin, q_lens[s], kv_lens[s], tables.data() + static_cast<size_t>(s) * max_blocks};
      begin += q_lens[s];
    }
    cpu::PagedKvLayer layer{pool.f.data(), pool.f.data() + v_base, stride, bs};
    cpu::paged_attention(q, ldq, seqs, H, D, layer, Hkv, window, scale, out, static_cast<int64_t>(H) * D, slopes,
                         softcap);
  }
};

struct AttnCase {
  int H, Hkv, D, bs, window;
  ElemType t;
  float softcap = 0.0f;
  bool alibi = false;
  bool shared_pool = false;  // K and V of a block side by side
  bool fp8 = false;          // an fp8 e4m3 cache
};

std::string describe(const AttnCase& c) {
  return std::string(testing::type_name(c.t)) + " H=" + std::to_string(c.H) + " Hkv=" + std::to_string(c.Hkv) +
         " D=" + std::to_string(c.D) + " bs=" + std::to_string(c.bs) + " window=" + std::to_string(c.window) +
         " softcap=" + std::to_string(c.softcap) + (c.alibi ? " alibi" : "") + (c.shared_pool ? " shared-pool" : "") +
         (c.fp8 ? " fp8" : "");
}

// Fills the shape; ALiBi slopes (cpu::alibi_slopes) go to `slopes` on the device.
cuda::AttentionShape make_shape(const AttnCase& c, std::vector<float>& host_slopes, DeviceBuffer<float>& slopes) {
  cuda::AttentionShape shape;
  shape.num_heads = c.H;
  shape.num_kv_heads = c.Hkv;
  shape.head_dim = c.D;
  shape.scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  shape.window = c.window;
  shape.softcap = c.softcap;
  shape.kv_fp8 = c.fp8;
  if (c.alibi) {
    host_slopes = cpu::alibi_slopes(c.H, 8.0);
    slopes = DeviceBuffer<float>(host_slopes);
    shape.alibi_slopes = slopes.get();
  }
  return shape;
}

// The kernels a test can force on a plan: the planner's choice, or (decode) the split / head-major kernel, or
// (prefill) the mma.sync / wgmma kernel.
enum class Kernel { Planned, Split, HeadMajor, MmaSync, Wgmma };
const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::Planned:
      return "planned";
    case Kernel::Split:
      return "split";
    case Kernel::HeadMajor:
      return "head-major";
    case Kernel::MmaSync:
      return "mma.sync";
    case Kernel::Wgmma:
      return "wgmma";
  }
  return "?";
}

void run_decode(const AttnCase& c, const std::vector<int32_t>& lens, int splits, std::mt19937& rng,
                Kernel kernel = Kernel::Planned) {
  Paged pg(lens, c.H, c.Hkv, c.D, c.bs, c.t, rng, c.shared_pool, c.fp8);
  const int S = pg.num_seqs;
  const int64_t row = static_cast<int64_t>(c.H) * c.D;
  const Half16 q = testing::round16(testing::randn(S * row, rng, 2.0f), c.t);
  std::vector<float> hs;
  DeviceBuffer<float> ds;
  const cuda::AttentionShape shape = make_shape(c, hs, ds);
  const int max_len = *std::max_element(lens.begin(), lens.end());
  cuda::DecodePlan plan = cuda::plan_decode_attention(shape, S, max_len, 132, splits);
  if (kernel != Kernel::Planned) plan.head_major = kernel == Kernel::HeadMajor;
  DeviceBuffer<uint16_t> dq(q.bits), dout(S * row);
  DeviceBuffer<uint8_t> ws(std::max<size_t>(plan.workspace_bytes, 1));
  dout.poison();
  ws.poison();
  cuda::decode_attention(c.t, plan, shape, dq.get(), 0, pg.kv(), dout.get(), 0, ws.get(), nullptr);
  const auto got = testing::to_float(dout.download(), c.t);

  std::vector<float> want(S * row);
  pg.reference(q.f.data(), row, std::vector<int32_t>(S, 1), c.window, shape.scale, c.alibi ? hs.data() : nullptr,
               c.softcap, want.data());
  EXPECT_LT(testing::rel_err(got, want), testing::tol16(c.t))
      << "decode " << describe(c) << " seqs=" << S << " max_len=" << max_len << " splits=" << plan.num_splits << " "
      << kernel_name(kernel) << (plan.head_major ? " (head-major)" : " (split)");
}

void run_prefill(const AttnCase& c, const std::vector<int32_t>& q_lens, const std::vector<int32_t>& prefix,
                 std::mt19937& rng, Kernel kernel = Kernel::Planned) {
  const int S = static_cast<int>(q_lens.size());
  std::vector<int32_t> lens(S), cu(S + 1, 0);
  for (int s = 0; s < S; ++s) lens[s] = prefix[s] + q_lens[s], cu[s + 1] = cu[s] + q_lens[s];
  Paged pg(lens, c.H, c.Hkv, c.D, c.bs, c.t, rng, c.shared_pool, c.fp8);
  const int64_t row = static_cast<int64_t>(c.H) * c.D;
  // q rows with a stride wider than the heads (as inside a fused qkv buffer).
  const int64_t ldq = row + 2 * static_cast<int64_t>(c.Hkv) * c.D;
  const int total = cu[S];
  const Half16 q = testing::round16(testing::randn(total * ldq, rng, 2.0f), c.t);
  std::vector<float> hs;
  DeviceBuffer<float> ds;
  const cuda::AttentionShape shape = make_shape(c, hs, ds);
  const int max_q = *std::max_element(q_lens.begin(), q_lens.end());
  cuda::PrefillPlan plan = cuda::plan_prefill_attention(shape, S, max_q);
  if (kernel != Kernel::Planned) plan.wgmma = kernel == Kernel::Wgmma;
  DeviceBuffer<uint16_t> dq(q.bits), dout(total * row);
  DeviceBuffer<int32_t> dcu(cu);
  dout.poison();
  cuda::prefill_attention(c.t, plan, shape, dq.get(), ldq, dcu.get(), pg.kv(), dout.get(), 0, nullptr);
  const auto got = testing::to_float(dout.download(), c.t);

  std::vector<float> want(total * row);
  pg.reference(q.f.data(), ldq, q_lens, c.window, shape.scale, c.alibi ? hs.data() : nullptr, c.softcap, want.data());
  std::string ql;
  for (int s = 0; s < S; ++s) ql += " " + std::to_string(prefix[s]) + "+" + std::to_string(q_lens[s]);
  EXPECT_LT(testing::rel_err(got, want), testing::tol16(c.t))
      << "prefill " << describe(c) << " seqs:" << ql << " " << kernel_name(kernel) << (plan.wgmma ? " (wgmma)" : "");
}

// (query heads, KV heads): MHA, GQA 4, GQA 8, MQA, and MQA with more than 16 heads per group.
const std::pair<int, int> kHeads[] = {{4, 4}, {16, 4}, {32, 4}, {8, 1}, {32, 1}};

TEST(CudaDecodeAttention, MatchesCpuOverShapes) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(21);
  for (ElemType t : {ElemType::BF16, ElemType::F16})
    for (int D : {64, 80, 96, 128, 256})
      for (auto [H, Hkv] : kHeads)
        for (int bs : {1, 16}) {
          const AttnCase c{H, Hkv, D, bs, 0, t};
          run_decode(c, {1, 97, 300}, 0, rng);
          if (D == 128 || D == 80) {
            std::vector<int32_t> lens(17);
            std::uniform_int_distribution<int32_t> pick(1, 300);
            for (auto& l : lens) l = pick(rng);
            run_decode(c, lens, 0, rng);
            run_decode(c, lens, 1, rng);
            run_decode(c, lens, 7, rng);
          }
        }
}

TEST(CudaDecodeAttention, SlidingWindowSoftcapAlibiAndBothKernels) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(22);
  for (ElemType t : {ElemType::BF16, ElemType::F16}) {
    run_decode({32, 8, 128, 16, 64, t}, {1, 97, 300}, 0, rng);
    run_decode({32, 8, 128, 16, 64, t}, {1, 97, 300}, 5, rng);
    run_decode({8, 2, 96, 1, 33, t}, {30, 97, 300}, 3, rng);
    run_decode({16, 8, 256, 16, 0, t, 30.0f}, {1, 97, 300}, 0, rng);
    run_decode({16, 8, 256, 16, 100, t, 50.0f}, {1, 97, 300}, 2, rng);
    run_decode({12, 12, 64, 16, 0, t, 0.0f, true}, {1, 97, 300}, 0, rng);         // ALiBi (BLOOM-like, 12 heads)
    run_decode({16, 2, 128, 1, 0, t, 30.0f, true}, {5, 300}, 3, rng);             // ALiBi + soft-capping, GQA
    run_decode({32, 8, 128, 16, 0, t, 0.0f, false, true}, {1, 97, 300}, 0, rng);  // K|V side by side
    run_decode({8, 2, 80, 1, 40, t, 0.0f, false, true}, {1, 97, 300}, 4, rng);
  }
  std::vector<int32_t> lens(17);
  std::uniform_int_distribution<int32_t> pick(1, 2100);
  for (auto& l : lens) l = pick(rng);
  // head_dim 128: the plan's kernel and each of the two, planned and fixed splits.
  for (ElemType t : {ElemType::BF16, ElemType::F16})
    for (Kernel kernel : {Kernel::Planned, Kernel::Split, Kernel::HeadMajor})
      for (int splits : {0, 1, 3}) {
        run_decode({32, 8, 128, 16, 0, t}, lens, splits, rng, kernel);
        run_decode({8, 1, 128, 1, 100, t, 0.0f, true}, {1, 17, 300}, splits, rng, kernel);
        // Groups over 16 heads (two row chunks), a block size that is not a power of two, K|V in one pool,
        // soft-capping; a window with a block size of 12.
        run_decode({32, 1, 128, 3, 0, t, 20.0f, false, true}, {1, 45, 300}, splits, rng, kernel);
        run_decode({24, 3, 128, 12, 70, t}, {2, 70, 71, 333}, splits, rng, kernel);
      }
}

// A plan made for a longer context serves shorter ones (as inside a CUDA graph), and one made for a shorter
// context serves longer ones (each sequence's context is divided among the splits), on both kernels.
TEST(CudaDecodeAttention, PlanServesOtherContextLengths) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(23);
  for (Kernel kernel : {Kernel::Split, Kernel::HeadMajor})
    for (auto [plan_len, splits] : {std::pair{8192, 0}, std::pair{64, 5}, std::pair{16, 0}}) {
      const AttnCase c{32, 8, 128, 16, 0, ElemType::BF16};
      Paged pg({1, 300, 2049, 17}, c.H, c.Hkv, c.D, c.bs, c.t, rng);
      const int64_t row = static_cast<int64_t>(c.H) * c.D;
      const Half16 q = testing::round16(testing::randn(4 * row, rng, 2.0f), c.t);
      std::vector<float> hs;
      DeviceBuffer<float> ds;
      const cuda::AttentionShape shape = make_shape(c, hs, ds);
      cuda::DecodePlan plan = cuda::plan_decode_attention(shape, 4, plan_len, 132, splits);
      plan.head_major = kernel == Kernel::HeadMajor;
      DeviceBuffer<uint16_t> dq(q.bits), dout(4 * row);
      DeviceBuffer<uint8_t> ws(std::max<size_t>(plan.workspace_bytes, 1));
      dout.poison();
      ws.poison();
      cuda::decode_attention(c.t, plan, shape, dq.get(), 0, pg.kv(), dout.get(), 0, ws.get(), nullptr);
      const auto got = testing::to_float(dout.download(), c.t);
      std::vector<float> want(4 * row);
      pg.reference(q.f.data(), row, std::vector<int32_t>(4, 1), 0, shape.scale, nullptr, 0.0f, want.data());
      EXPECT_LT(testing::rel_err(got, want), testing::tol16(c.t))
          << kernel_name(kernel) << " plan for " << plan_len << " splits " << plan.num_splits;
    }
}

TEST(CudaPrefillAttention, MatchesCpuOverShapes) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(31);
  for (ElemType t : {ElemType::BF16, ElemType::F16})
    for (int D : {64, 80, 96, 128, 256})
      for (auto [H, Hkv] : kHeads)
        for (int bs : {1, 16}) {
          const AttnCase c{H, Hkv, D, bs, 0, t};
          // Plain prefill, a chunk after a cached prefix, a single token after a prefix, a short chunk.
          run_prefill(c, {97, 17, 1}, {0, 300, 97}, rng);
          if (D == 128) run_prefill(c, {300, 3}, {0, 5}, rng);
        }
}

TEST(CudaPrefillAttention, SlidingWindowSoftcapAndAlibi) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(32);
  for (ElemType t : {ElemType::BF16, ElemType::F16}) {
    run_prefill({32, 8, 128, 16, 64, t}, {300, 97, 1}, {0, 200, 300}, rng);
    run_prefill({8, 1, 64, 1, 17, t}, {97, 40}, {0, 60}, rng);
    run_prefill({16, 8, 256, 16, 0, t, 30.0f}, {97, 17}, {0, 100}, rng);
    run_prefill({16, 4, 80, 16, 50, t, 20.0f}, {130}, {70}, rng);
    run_prefill({12, 12, 64, 16, 0, t, 0.0f, true}, {97, 17}, {0, 40}, rng);
    run_prefill({16, 2, 128, 1, 33, t, 30.0f, true}, {130, 1}, {20, 99}, rng);
    run_prefill({32, 8, 128, 16, 0, t, 0.0f, false, true}, {97, 17, 1}, {0, 300, 97}, rng);
    run_prefill({8, 1, 256, 1, 0, t, 0.0f, false, true}, {70, 3}, {0, 60}, rng);
  }
}

// Both head_dim-128 prefill kernels over a 16-bit cache (the mma.sync one everywhere, the wgmma one on compute
// capability 9.0, where the plan takes it): GQA packing, MQA with 32 heads, chunks after prefixes, windows,
// soft-capping, ALiBi, K|V in one pool, block sizes 1, 16 and 12 (not a power of two).
TEST(CudaPrefillAttention, BothHd128Kernels) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(33);
  cudaDeviceProp prop{};
  KILN_TEST_CUDA(cudaGetDeviceProperties(&prop, 0));
  const bool sm90 = prop.major == 9 && prop.minor == 0;
  cuda::AttentionShape shape;
  shape.num_heads = 32, shape.num_kv_heads = 8, shape.head_dim = 128;
  EXPECT_EQ(cuda::plan_prefill_attention(shape, 1, 100).wgmma, sm90) << "the plan takes wgmma exactly on sm_90";
  for (ElemType t : {ElemType::BF16, ElemType::F16})
    for (Kernel kernel : {Kernel::MmaSync, Kernel::Wgmma}) {
      if (kernel == Kernel::Wgmma && !sm90) continue;  // built for sm_90a only
      run_prefill({32, 8, 128, 16, 0, t}, {300, 97, 1, 130}, {0, 200, 300, 5}, rng, kernel);
      run_prefill({32, 1, 128, 1, 0, t}, {97, 17, 3}, {0, 300, 97}, rng, kernel);
      run_prefill({32, 8, 128, 12, 64, t}, {300, 97, 1}, {0, 200, 300}, rng, kernel);
      run_prefill({16, 2, 128, 1, 33, t, 30.0f, true}, {130, 1}, {20, 99}, rng, kernel);
      run_prefill({4, 4, 128, 16, 0, t, 0.0f, false, true}, {257, 40}, {0, 333}, rng, kernel);
    }
}

// Head dims without a tensor-core instance (the tiny fixtures' 8, 12, 16, and others) take the generic kernel:
// decode and prefill, odd block sizes, GQA/MQA, windows, soft-capping, ALiBi.
TEST(CudaGenericAttention, SmallAndOddHeadDimsMatchCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(41);
  const std::pair<int, int> heads[] = {{4, 4}, {4, 2}, {6, 1}, {16, 4}};
  for (ElemType t : {ElemType::BF16, ElemType::F16})
    for (int D : {8, 12, 16, 24, 40, 72})
      for (auto [H, Hkv] : heads)
        for (int bs : {3, 16}) {
          const AttnCase c{H, Hkv, D, bs, 0, t};
          run_decode(c, {1, 97, 300}, 0, rng);
          run_prefill(c, {97, 17, 1}, {0, 300, 97}, rng);
        }
  for (ElemType t : {ElemType::BF16, ElemType::F16}) {
    run_decode({4, 2, 16, 4, 8, t}, {1, 7, 40}, 0, rng);  // Mistral-like window
    run_prefill({4, 2, 16, 4, 8, t}, {33, 7, 1}, {0, 20, 40}, rng);
    run_decode({4, 2, 16, 1, 6, t, 4.0f}, {1, 30}, 0, rng);  // Gemma 2-like window + soft-cap
    run_prefill({4, 2, 16, 1, 6, t, 4.0f}, {33, 5}, {0, 9}, rng);
    run_decode({6, 6, 8, 16, 0, t, 0.0f, true}, {1, 97, 300}, 0, rng);  // ALiBi over 6 heads
    run_prefill({6, 6, 12, 3, 0, t, 0.0f, true}, {97, 17}, {0, 40}, rng);
    run_prefill({4, 2, 12, 5, 0, t, 0.0f, false, true}, {50, 3}, {0, 21}, rng);  // K|V side by side
  }
}

// An fp8 e4m3 cache (AttentionShape::kv_fp8): the decode and prefill kernels of every head dim (and the generic
// kernel) against the CPU op over the same e4m3 values; GQA/MQA, block sizes, splits, windows, soft-capping, ALiBi,
// K|V side by side; both head_dim-128 decode kernels (the head-major one reads the fp8 tiles directly, the split one
// widens them); prefill plans over fp8 never take wgmma, and one that asks for it is refused, as is a head-major
// decode at another head dim.
TEST(CudaAttentionFp8Kv, MatchesCpuOverShapes) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(51);
  for (ElemType t : {ElemType::BF16, ElemType::F16}) {
    for (int D : {16, 64, 80, 96, 128, 256})
      for (auto [H, Hkv] : kHeads)
        for (int bs : {1, 16}) {
          AttnCase c{H, Hkv, D, bs, 0, t};
          c.fp8 = true;
          run_decode(c, {1, 97, 300}, 0, rng);
          run_prefill(c, {97, 17, 1}, {0, 300, 97}, rng);
          if (D == 128) {
            std::vector<int32_t> lens(17);
            std::uniform_int_distribution<int32_t> pick(1, 2100);
            for (auto& l : lens) l = pick(rng);
            for (int splits : {0, 1, 3}) run_decode(c, lens, splits, rng);
            run_decode(c, {5, 2000}, 0, rng);  // few sequences: the planner takes the split kernel
            run_prefill(c, {300, 3}, {0, 5}, rng);
          }
        }
    const AttnCase cases[] = {{32, 8, 128, 16, 64, t},
                              {16, 8, 256, 16, 100, t, 50.0f},
                              {12, 12, 64, 16, 0, t, 0.0f, true},
                              {16, 2, 128, 1, 33, t, 30.0f, true},
                              {32, 8, 128, 16, 0, t, 0.0f, false, true},
                              {24, 3, 128, 12, 70, t},
                              {4, 2, 16, 4, 8, t, 4.0f}};
    for (AttnCase c : cases) {
      c.fp8 = true;
      run_decode(c, {1, 97, 300}, 0, rng);
      run_decode(c, {2, 70, 71, 333}, 3, rng);
      run_prefill(c, {130, 17, 1}, {0, 99, 300}, rng);
    }
  }
  std::vector<int32_t> lens(9);
  std::uniform_int_distribution<int32_t> pick(1, 2100);
  for (auto& l : lens) l = pick(rng);
  for (ElemType t : {ElemType::BF16, ElemType::F16})
    for (Kernel kernel : {Kernel::Planned, Kernel::Split, Kernel::HeadMajor})
      for (int splits : {0, 3}) {
        AttnCase a{32, 8, 128, 16, 0, t}, b{32, 1, 128, 3, 0, t, 20.0f, false, true};
        a.fp8 = b.fp8 = true;
        run_decode(a, lens, splits, rng, kernel);
        run_decode(b, {1, 45, 300}, splits, rng, kernel);
      }
  // Refusals, before anything is launched.
  AttnCase c{32, 8, 128, 16, 0, ElemType::BF16};
  c.fp8 = true;
  std::vector<float> hs;
  DeviceBuffer<float> ds;
  cuda::AttentionShape shape = make_shape(c, hs, ds);
  Paged pg({5, 9}, c.H, c.Hkv, c.D, c.bs, c.t, rng, false, true);
  DeviceBuffer<uint16_t> dq(2 * 32 * 128), dout(2 * 32 * 128);
  DeviceBuffer<int32_t> dcu(std::vector<int32_t>{0, 1, 2});
  cuda::PrefillPlan pp = cuda::plan_prefill_attention(shape, 2, 1);
  EXPECT_FALSE(pp.wgmma);
  pp.wgmma = true;
  EXPECT_THROW(cuda::prefill_attention(c.t, pp, shape, dq.get(), 0, dcu.get(), pg.kv(), dout.get(), 0, nullptr), Error);
  shape.head_dim = 64;
  Paged pg64({5, 9}, c.H, c.Hkv, 64, c.bs, c.t, rng, false, true);
  cuda::DecodePlan dp = cuda::plan_decode_attention(shape, 2, 9, 132, 1);
  EXPECT_FALSE(dp.head_major);
  dp.head_major = true;
  EXPECT_THROW(cuda::decode_attention(c.t, dp, shape, dq.get(), 0, pg64.kv(), dout.get(), 0, nullptr, nullptr), Error);
}

// A few fp8 shapes for compute-sanitizer (tests/gpu/validate_device.sh): the direct head-major decode with and
// without splits, the widening split-layout decode (few sequences), prefill after a prefix, the generic kernel.
TEST(CudaAttentionFp8Kv, SanitizerSet) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(52);
  for (AttnCase c : {AttnCase{32, 8, 128, 16, 0, ElemType::BF16}, AttnCase{16, 2, 64, 3, 0, ElemType::F16},
                     AttnCase{4, 2, 16, 4, 8, ElemType::BF16}}) {
    c.fp8 = true;
    run_decode(c, {1, 97, 300, 40, 77, 500, 2, 9}, 0, rng);
    run_decode(c, {1, 97, 300}, 3, rng);
    run_prefill(c, {97, 17, 1}, {0, 120, 97}, rng);
  }
}

}  // namespace
}  // namespace kiln
