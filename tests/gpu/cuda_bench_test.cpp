// Micro-benchmarks of the CUDA ops on Llama-3.1-8B shapes (hidden 4096, 32 heads, 8 KV heads, head_dim 128,
// intermediate 14336), with the copy and GEMM ceilings measured in the same process. Disabled by default:
//   cuda_bench_test --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
// (KILN_BENCH_GEMM_ONLY=1: DISABLED_All stops after its GEMM rows, untuned and tuned.)
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <vector>

#include "core/thread_pool.h"
#include "cuda_test_util.h"
#include "model/cuda/cuda_decoder_model.h"

namespace kiln {
namespace {

using cuda::ElemType;
using testing::DeviceBuffer;

constexpr int kHidden = 4096, kHeads = 32, kKvHeads = 8, kHeadDim = 128, kInter = 14336, kVocab = 128256;

// Median over 7 timings of `iters` back-to-back calls (after a warm-up), in microseconds per call.
double time_us(const std::function<void()>& f, int iters) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t a, b;
  KILN_TEST_CUDA(cudaEventCreate(&a));
  KILN_TEST_CUDA(cudaEventCreate(&b));
  std::vector<double> t;
  for (int rep = 0; rep < 7; ++rep) {
    KILN_TEST_CUDA(cudaEventRecord(a));
    for (int i = 0; i < iters; ++i) f();
    KILN_TEST_CUDA(cudaEventRecord(b));
    KILN_TEST_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    KILN_TEST_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(1000.0 * ms / iters);
  }
  KILN_TEST_CUDA(cudaGetLastError());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double g_copy_gbs = 0, g_gemm_tflops = 0;

void report(const char* name, const std::string& shape, double us, double bytes, double flops) {
  const double gbs = bytes / us / 1e3, tfl = flops / us / 1e6;
  std::printf("BENCH | %-22s | %-34s | %10.2f us | %8.1f GB/s (%5.1f%% copy) | %7.1f TFLOP/s (%5.1f%% gemm)\n", name,
              shape.c_str(), us, gbs, g_copy_gbs > 0 ? 100.0 * gbs / g_copy_gbs : 0.0, tfl,
              g_gemm_tflops > 0 ? 100.0 * tfl / g_gemm_tflops : 0.0);
  std::fflush(stdout);
}

std::vector<uint16_t> random_bf16(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = f32_to_bf16(d(rng));
  return v;
}

// Decode attention over a paged cache of `bs`-token blocks (shuffled or in order; K and V in two pools or
// side by side in one; layers > 1: each block holds that many layers' K|V, as CudaDecoderModel's pool, and a
// middle layer is read), Llama-3.1-8B heads, planned for `plan_ctx` (0: ctx).
// `spread` > 1: the pool holds spread times the blocks the batch uses, and the batch's blocks are drawn at random
// from all of it (as in a serving pool that is only partly full).
// Attention benchmarks over an fp8 e4m3 cache instead of a bf16 one (the same element counts, one byte each).
bool g_fp8 = false;

// The attention kernel a row runs: the plan's choice, or one forced on the plan (decode: split or head-major;
// prefill: mma.sync or wgmma).
enum class Kernel { Planned, Split, HeadMajor, MmaSync, Wgmma };
const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::Planned:
      return "plan";
    case Kernel::Split:
      return "split";
    case Kernel::HeadMajor:
      return "hm";
    case Kernel::MmaSync:
      return "mma";
    case Kernel::Wgmma:
      return "wgmma";
  }
  return "?";
}

void bench_decode(int batch, int ctx, Kernel kernel, int splits, int bs, bool shuffle, bool shared, int layers = 1,
                  int plan_ctx = 0, int spread = 1) {
  const int per = (ctx + bs - 1) / bs;
  const int blocks = batch * per;
  const size_t block_elems = static_cast<size_t>(kKvHeads) * bs * kHeadDim;
  if (layers > 1) shared = true;
  DeviceBuffer<uint16_t> pool(2 * static_cast<size_t>(blocks) * spread * block_elems * layers);
  KILN_TEST_CUDA(cudaMemset(pool.get(), 0x3c, pool.size() * 2));  // non-zero finite values
  std::vector<int32_t> table(static_cast<size_t>(blocks) * spread), lens(batch, ctx);
  std::iota(table.begin(), table.end(), 0);
  if (shuffle) std::shuffle(table.begin(), table.end(), std::mt19937(12));
  table.resize(blocks);
  DeviceBuffer<int32_t> dt(table), dl(lens);
  DeviceBuffer<uint16_t> q(random_bf16(batch * kHeads * kHeadDim, 13)), out(batch * kHeads * kHeadDim);
  cuda::AttentionShape sh;
  sh.num_heads = kHeads;
  sh.num_kv_heads = kKvHeads;
  sh.head_dim = kHeadDim;
  sh.scale = 0.088f;
  sh.kv_fp8 = g_fp8;
  cuda::DecodePlan plan =
      cuda::plan_decode_attention(sh, batch, plan_ctx > 0 ? plan_ctx : ctx, cuda::num_sms(), splits);
  if (kernel != Kernel::Planned) plan.head_major = kernel == Kernel::HeadMajor;
  DeviceBuffer<uint8_t> w(std::max<size_t>(1, plan.workspace_bytes));
  cuda::PagedKv kv;
  const size_t layer0 = static_cast<size_t>(layers / 2) * 2 * block_elems;
  const size_t v_off = layer0 + (shared ? block_elems : static_cast<size_t>(blocks) * spread * block_elems);
  if (g_fp8) {  // the same element offsets into the pool's bytes (0x3c: 1.5 in e4m3)
    kv.k_cache = reinterpret_cast<const uint8_t*>(pool.get()) + layer0;
    kv.v_cache = reinterpret_cast<const uint8_t*>(pool.get()) + v_off;
  } else {
    kv.k_cache = pool.get() + layer0;
    kv.v_cache = pool.get() + v_off;
  }
  kv.block_stride = shared ? static_cast<int64_t>(2 * layers * block_elems) : 0;
  kv.block_tables = dt.get();
  kv.max_blocks_per_seq = per;
  kv.block_size = bs;
  kv.kv_lens = dl.get();
  const double us = time_us(
      [&] { cuda::decode_attention(ElemType::BF16, plan, sh, q.get(), 0, kv, out.get(), 0, w.get(), nullptr); }, 20);
  const double bytes = 2.0 * batch * ctx * kKvHeads * kHeadDim * (g_fp8 ? 1 : 2);
  report(g_fp8 ? "decode_attention fp8" : "decode_attention",
         "b=" + std::to_string(batch) + " ctx=" + std::to_string(ctx) + " " + kernel_name(kernel) +
             (plan.head_major ? "/hm" : "/split") + " sp=" + std::to_string(plan.num_splits) +
             " bs=" + std::to_string(bs) + (shuffle ? "" : " seq") + (shared ? " kv|" : "") +
             (layers > 1 ? " x" + std::to_string(layers) + " layers" : "") +
             (plan_ctx > 0 ? " plan@" + std::to_string(plan_ctx) : "") +
             (spread > 1 ? " in a pool x" + std::to_string(spread) : ""),
         us, bytes, 4.0 * batch * kHeads * ctx * kHeadDim);
}

void measure_copy() {
  const size_t n = size_t{2} << 30;
  DeviceBuffer<uint8_t> a(n), b(n);
  KILN_TEST_CUDA(cudaMemset(a.get(), 1, n));
  const double us = time_us([&] { KILN_TEST_CUDA(cudaMemcpyAsync(b.get(), a.get(), n, cudaMemcpyDeviceToDevice)); }, 5);
  g_copy_gbs = 2.0 * n / us / 1e3;
  report("copy (ceiling)", "2 GiB D2D", us, 2.0 * n, 0);
}

// Causal prefill of `seqs` sequences of q_len new tokens after `prefix` cached ones (16-token blocks), for each
// of `kernels` on the same data.
void bench_prefill(int seqs, int q_len, int prefix, const std::vector<Kernel>& kernels) {
  const int bs = 16, ctx = q_len + prefix, per = (ctx + bs - 1) / bs, blocks = seqs * per;
  DeviceBuffer<uint16_t> kc(random_bf16(static_cast<size_t>(blocks) * kKvHeads * bs * kHeadDim, 14)),
      vc(random_bf16(static_cast<size_t>(blocks) * kKvHeads * bs * kHeadDim, 15));
  std::vector<int32_t> table(blocks), lens(seqs, ctx), cu(seqs + 1);
  std::iota(table.begin(), table.end(), 0);
  for (int s = 0; s <= seqs; ++s) cu[s] = s * q_len;
  DeviceBuffer<int32_t> dt(table), dl(lens), dcu(cu);
  DeviceBuffer<uint16_t> q(random_bf16(static_cast<size_t>(seqs) * q_len * kHeads * kHeadDim, 16)),
      out(static_cast<size_t>(seqs) * q_len * kHeads * kHeadDim);
  cuda::AttentionShape sh;
  sh.num_heads = kHeads;
  sh.num_kv_heads = kKvHeads;
  sh.head_dim = kHeadDim;
  sh.scale = 0.088f;
  sh.kv_fp8 = g_fp8;
  if (g_fp8) {  // e4m3 1.5 everywhere
    KILN_TEST_CUDA(cudaMemset(kc.get(), 0x3c, kc.size() * 2));
    KILN_TEST_CUDA(cudaMemset(vc.get(), 0x3c, vc.size() * 2));
  }
  cuda::PagedKv kv;
  kv.k_cache = kc.get();
  kv.v_cache = vc.get();
  kv.block_tables = dt.get();
  kv.max_blocks_per_seq = per;
  kv.block_size = bs;
  kv.kv_lens = dl.get();
  double pairs = 0;  // visible (query, key) pairs per head
  for (int i = 0; i < q_len; ++i) pairs += prefix + i + 1;
  const double flops = 4.0 * seqs * kHeads * kHeadDim * pairs;
  for (Kernel kernel : kernels) {
    cuda::PrefillPlan plan = cuda::plan_prefill_attention(sh, seqs, q_len);
    if (kernel != Kernel::Planned) plan.wgmma = kernel == Kernel::Wgmma;
    const double us = time_us(
        [&] { cuda::prefill_attention(ElemType::BF16, plan, sh, q.get(), 0, dcu.get(), kv, out.get(), 0, nullptr); },
        5);
    report(g_fp8 ? "prefill_attention fp8" : "prefill_attention",
           std::to_string(seqs) + "x(" + std::to_string(prefix) + "+" + std::to_string(q_len) + ") " +
               kernel_name(kernel) + (plan.wgmma ? "/wgmma" : "/mma"),
           us, 2.0 * blocks * kKvHeads * bs * kHeadDim * (g_fp8 ? 1 : 2), flops);
  }
}
void bench_prefill(int seqs, int q_len, int prefix, Kernel kernel = Kernel::Planned) {
  bench_prefill(seqs, q_len, prefix, std::vector<Kernel>{kernel});
}

// Whether the wgmma prefill kernel can run here (compute capability 9.0).
bool sm90() {
  cudaDeviceProp prop{};
  KILN_TEST_CUDA(cudaGetDeviceProperties(&prop, 0));
  return prop.major == 9 && prop.minor == 0;
}

// Prefill benchmark rows: sequences, new tokens each, cached prefix.
constexpr int kPrefillRows[][3] = {{1, 4096, 0}, {8, 1024, 0}, {1, 512, 3584},
                                   {4, 8192, 0}, {1, 2048, 0}, {4, 2048, 0}};

// Both decode kernels and both prefill kernels (wgmma on compute capability 9.0) on the Llama-3.1-8B shape, with the
// copy ceiling. (The configurations measured against them, since removed, are in docs/kernels.md.)
TEST(CudaBench, DISABLED_AttentionKernels) {
  KILN_REQUIRE_GPU();
  measure_copy();
  for (Kernel kernel : {Kernel::Split, Kernel::HeadMajor}) {
    for (int bs : {16, 32, 64}) bench_decode(64, 2048, kernel, 0, bs, true, false);
    for (int batch : {1, 8, 32, 128}) bench_decode(batch, 2048, kernel, 0, 16, true, false);
    bench_decode(16, 8192, kernel, 0, 16, true, false);
    bench_decode(1, 32768, kernel, 0, 16, true, false);
    for (int splits : {1, 2, 3, 4}) bench_decode(64, 2048, kernel, splits, 16, true, false);
  }
  std::vector<Kernel> prefill = {Kernel::MmaSync};
  if (sm90()) prefill.push_back(Kernel::Wgmma);
  for (auto [seqs, q_len, prefix] : kPrefillRows) bench_prefill(seqs, q_len, prefix, prefill);
}

// The prefill kernels alone (the plan's, the mma.sync one and on compute capability 9.0 the wgmma one), each row's
// data shared by all of them.
TEST(CudaBench, DISABLED_PrefillAttentionKernels) {
  KILN_REQUIRE_GPU();
  std::vector<Kernel> kernels = {Kernel::Planned, Kernel::MmaSync};
  if (sm90()) kernels.push_back(Kernel::Wgmma);
  for (auto [seqs, q_len, prefix] : kPrefillRows) bench_prefill(seqs, q_len, prefix, kernels);
}

TEST(CudaBench, DISABLED_DecodeLayouts) {
  KILN_REQUIRE_GPU();
  measure_copy();
  for (int bs : {16, 64, 256})
    for (bool shuffle : {true, false})
      for (bool shared : {false, true}) bench_decode(64, 2048, Kernel::Planned, 1, bs, shuffle, shared);
  for (Kernel kernel : {Kernel::Planned, Kernel::Split, Kernel::HeadMajor})
    bench_decode(64, 2048, kernel, 0, 64, true, true);
}

TEST(CudaBench, DISABLED_All) {
  KILN_REQUIRE_GPU();
  cudaDeviceProp prop{};
  KILN_TEST_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("BENCH device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);

  // Ceilings: device-to-device copy (bytes read + written) and a large bf16 GEMM.
  measure_copy();
  // Two GEMM objects over one workspace: cuBLASLt's top heuristic choice, and autotuned (the first call of a
  // shape times the heuristic's candidates and keeps the fastest: cuda::Gemm).
  DeviceBuffer<uint8_t> ws(64 << 20);
  cuda::Gemm gemm(ws.get(), ws.size(), {.tuning = false}), tuned(ws.get(), ws.size(), {.tuning_min_rows = 1});
  {
    const int64_t n = 8192;
    DeviceBuffer<uint16_t> a(random_bf16(n * n, 1)), b(random_bf16(n * n, 2)), c(n * n);
    for (cuda::Gemm* g : {&gemm, &tuned}) {
      // Twice: the first run also brings the clocks up from idle; the faster one is the ceiling.
      double us = 1e30;
      for (int rep = 0; rep < 2; ++rep)
        us = std::min(us, time_us(
                              [&] {
                                g->run(ElemType::BF16, ElemType::BF16, a.get(), n, n, b.get(), n, nullptr, nullptr,
                                       c.get(), nullptr);
                              },
                              20));
      if (g == &gemm) g_gemm_tflops = 2.0 * n * n * n / us / 1e6;
      report(g == &gemm ? "gemm (ceiling)" : "gemm (ceiling) tuned", "8192^3 bf16", us, 3.0 * n * n * 2,
             2.0 * n * n * n);
    }
  }

  // GEMMs of one layer and the lm_head as the model runs them: qkv into 16-bit; o and down accumulate into the
  // fp32 residual stream in place; gate_up and the logits into fp32. Weights rotate over > 256 MB so small-T
  // runs read HBM, not L2. Each shape untuned, then tuned (with the tuning call's own time).
  struct G {
    const char* name;
    int64_t in, out;
    bool f32, accumulate;
  };
  const G gs[] = {{"gemm qkv", kHidden, (kHeads + 2 * kKvHeads) * kHeadDim, false, false},
                  {"gemm o (f32 +=)", kHeads * kHeadDim, kHidden, true, true},
                  {"gemm gate_up (f32 out)", kHidden, 2 * kInter, true, false},
                  {"gemm down (f32 +=)", kInter, kHidden, true, true},
                  {"gemm lm_head (f32 out)", kHidden, kVocab, true, false}};
  for (const G& g : gs) {
    const size_t wbytes = static_cast<size_t>(g.in) * g.out * 2;
    const int nrot = static_cast<int>(std::max<size_t>(1, (size_t{256} << 20) / wbytes + 1));
    std::vector<DeviceBuffer<uint16_t>> w;
    for (int i = 0; i < nrot; ++i) {
      w.emplace_back(static_cast<size_t>(g.in) * g.out);
      cuda::fill_normal(ElemType::BF16, w.back().get(), g.in * g.out, 10 + i, 0.02, ElemType::BF16, nullptr);
    }
    for (int64_t T : {1, 64, 4096, 8192}) {
      if (g.out == kVocab && T > 64) continue;  // the logits are computed for the last token of each sequence
      DeviceBuffer<uint16_t> x(T * g.in);
      cuda::fill_normal(ElemType::BF16, x.get(), T * g.in, 3, 1.0, ElemType::BF16, nullptr);
      DeviceBuffer<uint8_t> y(T * g.out * (g.f32 ? 4 : 2));
      if (g.accumulate) cuda::fill_f32(reinterpret_cast<float*>(y.get()), T * g.out, 0.0f, nullptr);
      const double bytes = wbytes + T * g.in * 2.0 + T * g.out * (g.f32 ? 4.0 : 2.0) * (g.accumulate ? 2 : 1);
      const std::string shape = "T=" + std::to_string(T) + " " + std::to_string(g.in) + "->" + std::to_string(g.out);
      for (cuda::Gemm* gm : {&gemm, &tuned}) {
        int r = 0;
        auto call = [&] {
          gm->run(ElemType::BF16, g.f32 ? ElemType::F32 : ElemType::BF16, x.get(), T, g.in, w[r].get(), g.out, nullptr,
                  g.accumulate ? y.get() : nullptr, y.get(), nullptr);
          r = (r + 1) % nrot;
        };
        KILN_TEST_CUDA(cudaDeviceSynchronize());
        const auto t0 = std::chrono::steady_clock::now();
        call();  // plans the shape (the tuned one tunes it)
        KILN_TEST_CUDA(cudaDeviceSynchronize());
        const double first_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        const double us = time_us(call, 20);
        report(gm == &gemm ? g.name : "  tuned", shape, us, bytes, 2.0 * T * g.in * g.out);
        if (gm == &tuned) std::printf("BENCH |   (first call, tuning included: %.1f ms)\n", first_ms);
      }
    }
  }
  if (const char* e = std::getenv("KILN_BENCH_GEMM_ONLY"); e && std::string(e) == "1") return;

  // The gated activation of a 16-bit gate|up buffer and RoPE + KV write at T = 4096 tokens (the fp32 stream's
  // norms, embedding and activations: DISABLED_Fp32StreamAndSampling).
  {
    const int64_t T = 4096;
    DeviceBuffer<uint16_t> gu(random_bf16(T * 2 * kInter, 7)), act(T * kInter);
    double us = time_us(
        [&] {
          cuda::gated_activation(ElemType::BF16, gu.get(), gu.get() + kInter, act.get(), T, kInter, 2 * kInter,
                                 cuda::Act::SiLU, nullptr);
        },
        20);
    report("swiglu", "4096x14336", us, 3.0 * T * kInter * 2, 0);

    const int64_t row = (kHeads + 2 * kKvHeads) * kHeadDim;
    DeviceBuffer<uint16_t> qkv(random_bf16(T * row, 10));
    const int bs = 16;
    DeviceBuffer<uint16_t> kc(T * kKvHeads * kHeadDim), vc(T * kKvHeads * kHeadDim);
    std::vector<int32_t> pos(T), slots(T);
    std::iota(pos.begin(), pos.end(), 0);
    std::iota(slots.begin(), slots.end(), 0);
    std::vector<double> inv(kHeadDim / 2);
    for (int i = 0; i < kHeadDim / 2; ++i) inv[i] = std::pow(500000.0, -2.0 * i / kHeadDim);
    DeviceBuffer<int32_t> dpos(pos), dslots(slots);
    DeviceBuffer<double> dinv(inv);
    cuda::RopeKvArgs a;
    a.num_tokens = T;
    a.num_heads = kHeads;
    a.num_kv_heads = kKvHeads;
    a.head_dim = kHeadDim;
    a.rotary_dim = kHeadDim;
    a.positions = dpos.get();
    a.inv_freq = dinv.get();
    a.slot_mapping = dslots.get();
    a.k_cache = kc.get();
    a.v_cache = vc.get();
    a.block_size = bs;
    us = time_us([&] { cuda::rope_kv_write(ElemType::BF16, qkv.get(), a, nullptr); }, 50);
    // reads q, k, v; writes q, k, v
    report("rope_kv_write", "4096 tokens", us, 2.0 * T * row * 2, 0);
  }

  // Decode and prefill as planned (each kernel at every shape: DISABLED_AttentionKernels).
  for (auto [batch, ctx] :
       {std::pair{64, 2048}, std::pair{1, 2048}, std::pair{1, 32768}, std::pair{16, 8192}, std::pair{128, 2048}})
    bench_decode(batch, ctx, Kernel::Planned, 0, 16, true, false);

  // Prefill attention (causal, no prefix, and a chunk after a prefix).
  bench_prefill(1, 4096, 0);
  bench_prefill(8, 1024, 0);
  bench_prefill(1, 512, 3584);
  bench_prefill(4, 8192, 0);

  // Sampling over a Llama-3 vocabulary.
  {
    const int64_t rows = 64;
    std::mt19937 rng(17);
    DeviceBuffer<float> lg(testing::randn(rows * kVocab, rng, 3.0f));
    DeviceBuffer<int32_t> tok(rows), ids(rows * 5);
    DeviceBuffer<float> lp(rows), tlp(rows * 5);
    SamplingParams temp;
    temp.temperature = 0.8f;
    temp.seed = 1;
    DeviceBuffer<SamplingParams> params(std::vector<SamplingParams>(rows, temp));
    cuda::SampleArgs a;
    a.logits = lg.get();
    a.rows = rows;
    a.vocab = kVocab;
    a.tokens = tok.get();
    a.token_logprobs = lp.get();
    double us = time_us([&] { cuda::sample(a, nullptr); }, 50);
    report("sample greedy", "64 x 128256 f32", us, 4.0 * rows * kVocab, 0);
    a.top_k = 5;
    a.top_ids = ids.get();
    a.top_logprobs = tlp.get();
    a.params = params.get();
    us = time_us([&] { cuda::sample(a, nullptr); }, 50);
    report("sample temp+top5", "64 x 128256 f32", us, 4.0 * rows * kVocab, 0);
  }
}

// The ops around the fp32 residual stream (norms, embedding, activations, clamp, soft-cap) at T = 4096 tokens, and
// the sampler's per-row paths (penalties, top-p, min-p, top-k + top-p) over a Llama-3 vocabulary.
TEST(CudaBench, DISABLED_Fp32StreamAndSampling) {
  KILN_REQUIRE_GPU();
  measure_copy();
  const int64_t T = 4096, H = kHidden;
  std::mt19937 rng(21);
  {
    DeviceBuffer<float> x(testing::randn(T * H, rng)), w(testing::randn(H, rng)), b(testing::randn(H, rng)),
        y32(testing::randn(T * H, rng));
    DeviceBuffer<uint16_t> y16(T * H);
    const std::string sh = std::to_string(T) + "x" + std::to_string(H);
    double us = time_us(
        [&] {
          cuda::norm_f32(ElemType::BF16, false, x.get(), w.get(), nullptr, y16.get(), T, H, 1e-5f, false, false,
                         nullptr, nullptr);
        },
        50);
    report("rms_norm_f32 ->bf16", sh + " f32 -> bf16", us, T * H * 4.0 + H * 4.0 + T * H * 2.0, 0);
    us = time_us(
        [&] {
          cuda::norm_f32(ElemType::BF16, true, x.get(), w.get(), b.get(), y16.get(), T, H, 1e-5f, false, false, nullptr,
                         nullptr);
        },
        50);
    report("layer_norm_f32 ->bf16", sh + " f32 -> bf16", us, T * H * 4.0 + 2 * H * 4.0 + T * H * 2.0, 0);
    // Gemma 2's post-norm into the residual: y32 += norm(x) (y32 drifts by norm(x) a call and stays finite).
    us = time_us(
        [&] {
          cuda::norm_f32(ElemType::F32, false, x.get(), w.get(), nullptr, y32.get(), T, H, 1e-6f, true, true, nullptr,
                         nullptr);
        },
        50);
    report("rms_norm_f32 +=f32", sh + " f32 += f32", us, T * H * 4.0 + H * 4.0 + 2.0 * T * H * 4, 0);
    // The final norm of the logit rows: 64 rows gathered from the 4096 (1 MB read: L2-resident after warm-up).
    const int64_t R = 64;
    std::vector<int32_t> rows(R);
    for (auto& r : rows) r = static_cast<int32_t>(rng() % T);
    DeviceBuffer<int32_t> drows(rows);
    us = time_us(
        [&] {
          cuda::norm_f32(ElemType::BF16, false, x.get(), w.get(), nullptr, y16.get(), R, H, 1e-5f, false, false,
                         drows.get(), nullptr);
        },
        50);
    report("rms_norm_f32 gather", "64 of 4096 rows x 4096 -> bf16", us, R * H * 4.0 + H * 4.0 + R * H * 2.0, 0);

    // Embedding into the fp32 stream from a bf16 table (constant non-zero bytes: the values do not matter).
    DeviceBuffer<uint16_t> table(static_cast<size_t>(kVocab) * H);
    KILN_TEST_CUDA(cudaMemset(table.get(), 0x3c, table.size() * 2));
    std::vector<int32_t> ids(T);
    for (auto& id : ids) id = static_cast<int32_t>(rng() % kVocab);
    DeviceBuffer<int32_t> dids(ids);
    us = time_us(
        [&] {
          cuda::embedding_f32(ElemType::BF16, table.get(), kVocab, H, dids.get(), T, 1.0f, nullptr, 0, nullptr,
                              y32.get(), nullptr);
        },
        50);
    report("embedding_f32", "4096 tokens x 4096 bf16 -> f32", us, T * H * 2.0 + T * H * 4.0, 0);

    // Gated activations of the fp32 gate|up GEMM output [T, 2 * 14336] into bf16 (input: copies of x's N(0, 1)).
    DeviceBuffer<float> gu(T * 2 * kInter);
    for (size_t o = 0; o < gu.size(); o += x.size())
      KILN_TEST_CUDA(
          cudaMemcpy(gu.get() + o, x.get(), std::min(x.size(), gu.size() - o) * 4, cudaMemcpyDeviceToDevice));
    DeviceBuffer<uint16_t> act(T * kInter);
    const std::pair<const char*, cuda::Act> acts[] = {{"swiglu_f32 ->bf16", cuda::Act::SiLU},
                                                      {"geglu_tanh_f32 ->bf16", cuda::Act::GeluTanh}};
    for (const auto& ac : acts) {
      us = time_us(
          [&] {
            cuda::activation_f32(ElemType::BF16, gu.get(), 2 * kInter, act.get(), T, kInter, ac.second, true, nullptr);
          },
          20);
      report(ac.first, "4096 x 2*14336 f32 -> bf16", us, T * 2.0 * kInter * 4 + T * kInter * 2.0, 0);
    }
  }
  // MPT's clip_qkv on the fused bf16 qkv, in place (idempotent, so every call sees the same data).
  {
    const int64_t n = T * (kHeads + 2 * kKvHeads) * kHeadDim;
    DeviceBuffer<uint16_t> qkv(n);
    KILN_TEST_CUDA(cudaMemset(qkv.get(), 0x3c, n * 2));
    const double us = time_us([&] { cuda::clamp(ElemType::BF16, qkv.get(), n, -8.0f, 8.0f, nullptr); }, 50);
    report("clamp (clip_qkv)", "4096x6144 bf16 in place", us, 2.0 * n * 2, 0);
  }

  // Sampling with per-row params on 64 rows; logits N(0, 3) (a flat row: top-p keeps many tokens).
  const int64_t rows = 64;
  DeviceBuffer<float> lg(testing::randn(rows * kVocab, rng, 3.0f));
  {
    // 128 distinct tokens a row (each in the prompt or the output), the rows' ranges disjoint: the kernel
    // penalizes the row's logits in place and restores them from the scratch.
    const int kPen = 128;
    std::vector<SamplePenalty> entries;
    for (int64_t r = 0; r < rows; ++r) {
      const size_t begin = entries.size();
      for (int j = 0; entries.size() - begin < static_cast<size_t>(kPen);) {
        const int32_t t = static_cast<int32_t>(rng() % kVocab);
        if (std::none_of(entries.begin() + begin, entries.end(), [&](const auto& e) { return e.token == t; })) {
          entries.push_back({t, j % 3, j % 3 == 0 || j % 2 == 1});
          ++j;
        }
      }
    }
    DeviceBuffer<SamplePenalty> pens(entries);
    DeviceBuffer<float> scratch(entries.size());
    DeviceBuffer<int32_t> tok(rows);
    DeviceBuffer<float> lp(rows);
    cuda::SampleArgs a;
    a.logits = lg.get();
    a.rows = rows;
    a.vocab = kVocab;
    a.tokens = tok.get();
    a.token_logprobs = lp.get();
    auto bench = [&](const char* name, const char* shape, SamplingParams p, bool penalties) {
      std::vector<SamplingParams> params(rows, p);
      std::vector<cuda::SampleRowInfo> info(rows);
      for (int64_t r = 0; r < rows; ++r) {
        params[r].seed = 1000 + r;
        if (penalties) info[r].penalty_begin = static_cast<int32_t>(r * kPen), info[r].penalty_count = kPen;
      }
      DeviceBuffer<SamplingParams> dp(params);
      DeviceBuffer<cuda::SampleRowInfo> di(info);
      a.params = dp.get();
      a.info = di.get();
      a.penalties = penalties ? pens.get() : nullptr;
      a.penalty_scratch = scratch.get();
      const double us = time_us([&] { cuda::sample(a, nullptr); }, 50);
      report(name, shape, us, 4.0 * rows * kVocab, 0);
    };
    SamplingParams p;
    p.temperature = 0.8f;
    p.repetition_penalty = 1.1f, p.presence_penalty = 0.5f, p.frequency_penalty = 0.3f;
    bench("sample penalties", "64 x 128256 f32, 128/row, t=0.8", p, true);
    p = {};
    p.temperature = 0.8f;
    p.top_p = 0.9f;
    bench("sample top-p 0.9", "64 x 128256 f32, t=0.8", p, false);
    p.top_p = 1.0f;
    p.min_p = 0.05f;
    bench("sample min-p 0.05", "64 x 128256 f32, t=0.8", p, false);
    p.min_p = 0.0f;
    p.top_k = 50;
    p.top_p = 0.9f;
    bench("sample top-k 50+top-p", "64 x 128256 f32, t=0.8, p=0.9", p, false);
  }
  // Gemma 2's final soft-cap of the logits, in place (last: it shrinks them a little every call).
  {
    const int64_t n = rows * kVocab;
    const double us = time_us([&] { cuda::softcap(lg.get(), n, 30.0f, nullptr); }, 50);
    report("softcap", "64 x 128256 f32 in place", us, 2.0 * n * 4, 0);
  }
}

// Uniform weights from a hash (fast enough for 8 B parameters): scale 1/sqrt(fan-in), norms 1.
class HashSource final : public WeightSource {
 public:
  std::string path() const override { return "random-llama-8b"; }
  std::string name(WeightRole role, int64_t layer) const override {
    return std::to_string(static_cast<int>(role)) + "." + std::to_string(layer);
  }
  bool has(WeightRole role, int64_t) const override {
    switch (role) {
      case WeightRole::Embed:
      case WeightRole::FinalNorm:
      case WeightRole::LmHead:
      case WeightRole::AttnNorm:
      case WeightRole::Q:
      case WeightRole::K:
      case WeightRole::V:
      case WeightRole::O:
      case WeightRole::MlpNorm:
      case WeightRole::Gate:
      case WeightRole::Up:
      case WeightRole::Down:
        return true;
      default:
        return false;
    }
  }
  StoredTensor read(WeightRole role, int64_t layer, const Shape& shape) const override {
    const int64_t n = shape_numel(shape);
    StoredTensor t{DType::F32, shape, std::vector<uint8_t>(static_cast<size_t>(n) * 4)};
    float* dst = reinterpret_cast<float*>(t.bytes.data());
    const bool norm = shape.size() == 1;
    const float a = norm ? 0.0f : std::sqrt(3.0f / static_cast<float>(shape.back()));
    const uint64_t salt = (static_cast<uint64_t>(role) << 40) ^ (static_cast<uint64_t>(layer) << 20);
    ThreadPool::global().parallel_for(n, 1 << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        uint64_t z = (static_cast<uint64_t>(i) ^ salt) * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ull;
        z ^= z >> 29;
        const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
        dst[i] = norm ? 1.0f : a * u;
      }
    });
    return t;
  }
};

// End-to-end CudaDecoderModel on the Llama-3.1-8B shape (random bf16 weights): batch-1 prefill and decode
// (no CUDA graphs yet; each step synchronizes and copies the logits to the host).
TEST(CudaBench, DISABLED_Llama8BForward) {
  KILN_REQUIRE_GPU();
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.family = "llama";
  c.vocab_size = kVocab;
  c.hidden_size = kHidden;
  c.intermediate_size = kInter;
  c.num_layers = 32;
  c.num_heads = kHeads;
  c.num_kv_heads = kKvHeads;
  c.head_dim = kHeadDim;
  c.max_position_embeddings = 131072;
  c.norm_eps = 1e-5;
  c.rope.theta = 500000.0;
  c.rope.rotary_dim = kHeadDim;
  c.rope.scaling = RopeScaling::Llama3;
  c.rope.factor = 8.0;
  HashSource src;
  CudaModelOptions opt;
  opt.max_state_tokens = 2048;
  const auto t0 = std::chrono::steady_clock::now();
  auto model = CudaDecoderModel::create(c, src, {}, opt);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("BENCH llama-8b shape: %lld parameters, %.2f GB bf16 on the GPU, created in %.1f s\n",
              static_cast<long long>(model->num_parameters()), model->weight_bytes() / 1e9, load_s);
  std::vector<float> logits;
  auto run_prefill = [&](int n) {
    std::vector<int32_t> prompt(n);
    for (int i = 0; i < n; ++i) prompt[i] = (i * 7919) % kVocab;
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      auto st = model->new_state(n + 1);
      const auto a = std::chrono::steady_clock::now();
      model->forward(*st, prompt, logits);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    std::printf("BENCH | %-22s | %-34s | %10.2f us | %8.0f tok/s\n", "model prefill",
                ("batch 1, " + std::to_string(n) + " tokens").c_str(), best * 1e6, n / best);
  };
  run_prefill(128);
  run_prefill(2048);
  auto st = model->new_state(128 + 129);
  std::vector<int32_t> prompt(128, 1);
  model->forward(*st, prompt, logits);
  int32_t next = 0;
  std::vector<double> step;
  for (int i = 0; i < 128; ++i) {
    const std::vector<int32_t> one = {next};
    const auto a = std::chrono::steady_clock::now();
    model->forward(*st, one, logits);
    step.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  std::sort(step.begin(), step.end());
  const double med = step[step.size() / 2];
  std::printf("BENCH | %-22s | %-34s | %10.2f us | %8.1f tok/s (median step; p90 %.2f us)\n", "model decode",
              "batch 1, ISL 128, 128 steps", med * 1e6, 1.0 / med, step[step.size() * 9 / 10] * 1e6);
}

// Decode attention at the batch and context of the serving benchmarks' decode phases (docs/benchmarks.md):
// 1000/1000 at 384 sequences (context 1,000 to 2,000) and 2048/128 at 256 (2,048 to 2,176).
TEST(CudaBench, DISABLED_ServingDecodeAttention) {
  KILN_REQUIRE_GPU();
  measure_copy();
  for (int ctx : {1024, 1536, 2000}) bench_decode(384, ctx, Kernel::Planned, 0, 16, true, false);
  bench_decode(256, 2112, Kernel::Planned, 0, 16, true, false);
  // Block tables in allocation order (a prefill takes its blocks in a row) and the CUDA pool's layout: every
  // block holds its 32 layers' K|V, so one layer's blocks sit 2 MiB apart.
  for (bool shuffle : {true, false}) bench_decode(384, 1024, Kernel::Planned, 0, 16, shuffle, true, 32, 2048);
  // The 1000/1000 run's pool: blocks for 384 x 2000 tokens, about half in use at context ~1,000 (96 GB).
  bench_decode(384, 1024, Kernel::Planned, 0, 16, true, true, 32, 2048, 2);
  // Split counts against partial waves (batch 300 pads to a 320-row graph: 640 CTAs on ~528 resident slots),
  // and contexts just past a power of two planned for the next one (a graph's plan).
  for (int sp : {0, 1, 2, 3, 4}) bench_decode(320, 2112, Kernel::Planned, sp, 16, true, false);  // 0: the plan's choice
  for (int sp : {0, 1, 2, 3}) bench_decode(384, 2000, Kernel::Planned, sp, 16, true, false);
  for (int b : {48, 128}) {
    bench_decode(b, 2150, Kernel::Planned, 0, 16, true, false);
    bench_decode(b, 2150, Kernel::Planned, 0, 16, true, false, 1, 4096);
  }
}

// The serving shapes over a bf16 and an fp8 cache: the plan's choice, then each decode kernel; prefill of 4 x 2048
// and of a chunk after a prefix.
TEST(CudaBench, DISABLED_Fp8KvAttention) {
  KILN_REQUIRE_GPU();
  measure_copy();
  for (bool fp8 : {false, true}) {
    g_fp8 = fp8;
    for (int ctx : {1024, 2000}) bench_decode(384, ctx, Kernel::Planned, 0, 16, true, false);
    bench_decode(300, 2112, Kernel::Planned, 0, 16, true, false);
    bench_decode(64, 2048, Kernel::Planned, 0, 16, true, false);
    bench_decode(4, 2048, Kernel::Planned, 0, 16, true, false);
    bench_prefill(4, 2048, 0);
    bench_prefill(1, 512, 3584);
  }
  g_fp8 = true;
  for (Kernel kernel : {Kernel::Split, Kernel::HeadMajor}) {
    bench_decode(384, 2000, kernel, 0, 16, true, false);
    bench_decode(300, 2112, kernel, 0, 16, true, false);
  }
  g_fp8 = false;
}

}  // namespace
}  // namespace kiln
