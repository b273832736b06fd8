// cuBLASLt GEMM agrees with cpu::matmul (y = x·Wᵀ + bias + residual) on odd shapes, strides and types, 16-bit
// or fp32 y (an fp32 y with fp32 bias and residual: the logits and the fp32 residual stream); autotuned
// algorithms likewise, the in-place residual added exactly once, no tuning while a graph is captured, and the
// tuning options (GemmOptions) as given.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "cuda_test_util.h"
#include "kernels/cpu/ops.h"
#include "kiln/error.h"

namespace kiln {
namespace {

using cuda::ElemType;
using testing::DeviceBuffer;
using testing::Half16;

// Tuning every row-count bucket (the default tunes from 1024 rows).
const cuda::GemmOptions kTuneEveryBucket{.tuning = true, .tuning_min_rows = 1};

struct GemmCase {
  int64_t T, in, out;
  bool bias, residual;
  ElemType in_type, out_type;
  int64_t ldx_pad = 0, ldy_pad = 0;
};

void run_case(cuda::Gemm& gemm, const GemmCase& c, std::mt19937& rng, cudaStream_t stream = nullptr) {
  const int64_t ldx = c.in + c.ldx_pad, ldy = c.out + c.ldy_pad;
  const Half16 x = testing::round16(testing::randn(c.T * ldx, rng), c.in_type);
  const Half16 w = testing::round16(testing::randn(c.out * c.in, rng, 0.05f), c.in_type);
  // bias and residual have y's type
  const bool f32_out = c.out_type == ElemType::F32;
  const ElemType bt = f32_out ? ElemType::BF16 : c.out_type;
  std::vector<float> bias_f = testing::randn(c.out, rng), res_f = testing::randn(c.T * ldy, rng);
  const Half16 bias16 = testing::round16(bias_f, bt), res16 = testing::round16(res_f, bt);
  if (!f32_out) bias_f = bias16.f, res_f = res16.f;

  std::vector<float> want(c.T * ldy, 0.0f);
  cpu::matmul(x.f.data(), c.T, c.in, w.f.data(), c.out, c.bias ? bias_f.data() : nullptr, want.data(), ldx, ldy);
  if (c.residual)
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t o = 0; o < c.out; ++o) want[t * ldy + o] += res_f[t * ldy + o];

  DeviceBuffer<uint16_t> dx(x.bits), dw(w.bits);
  std::vector<float> got(c.T * ldy);
  if (f32_out) {
    DeviceBuffer<float> db(bias_f), dy(c.T * ldy);
    if (c.residual)
      dy.upload(res_f);
    else
      dy.poison();
    KILN_TEST_CUDA(cudaDeviceSynchronize());  // the uploads and the poison are done before `stream` reads them
    gemm.run(c.in_type, c.out_type, dx.get(), c.T, c.in, dw.get(), c.out, c.bias ? db.get() : nullptr,
             c.residual ? dy.get() : nullptr, dy.get(), stream, ldx, ldy);
    got = dy.download();
  } else {
    DeviceBuffer<uint16_t> db(bias16.bits), dy(c.T * ldy);
    if (c.residual)
      dy.upload(res16.bits);
    else
      dy.poison();
    KILN_TEST_CUDA(cudaDeviceSynchronize());  // the uploads and the poison are done before `stream` reads them
    gemm.run(c.in_type, c.out_type, dx.get(), c.T, c.in, dw.get(), c.out, c.bias ? db.get() : nullptr,
             c.residual ? dy.get() : nullptr, dy.get(), stream, ldx, ldy);
    got = testing::to_float(dy.download(), c.out_type);
  }
  // Compare only the written columns (the padding of ldy is not part of y).
  std::vector<float> g, wv;
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t o = 0; o < c.out; ++o) g.push_back(got[t * ldy + o]), wv.push_back(want[t * ldy + o]);
  const double tol = f32_out ? 1e-4 : testing::tol16(c.out_type);
  EXPECT_LT(testing::rel_err(g, wv), tol)
      << "T=" << c.T << " in=" << c.in << " out=" << c.out << " bias=" << c.bias << " residual=" << c.residual
      << " in_type=" << testing::type_name(c.in_type) << " f32_out=" << f32_out;
}

TEST(CudaGemm, MatchesCpuMatmul) {
  KILN_REQUIRE_GPU();
  DeviceBuffer<uint8_t> ws(32 << 20);
  cuda::Gemm gemm(ws.get(), ws.size());
  std::mt19937 rng(7);
  for (ElemType t : {ElemType::BF16, ElemType::F16}) {
    for (int64_t T : {1, 3, 17, 97}) {
      run_case(gemm, {T, 64, 8, false, false, t, t}, rng);
      run_case(gemm, {T, 136, 100, true, false, t, t}, rng);
      run_case(gemm, {T, 512, 1000, false, true, t, t}, rng);
      run_case(gemm, {T, 4096, 264, true, true, t, t}, rng);
      run_case(gemm, {T, 200, 96, false, false, t, t, 8, 24}, rng);         // strided rows
      run_case(gemm, {T, 256, 1000, false, false, t, ElemType::F32}, rng);  // logits in f32
      run_case(gemm, {T, 256, 1000, true, false, t, ElemType::F32}, rng);   // logits + an f32 lm_head bias
      // The fp32 residual stream: 16-bit inputs, fp32 bias, y += x·Wᵀ + bias in place (o_proj, down).
      run_case(gemm, {T, 512, 264, true, true, t, ElemType::F32}, rng);
      run_case(gemm, {T, 1000, 48, false, true, t, ElemType::F32}, rng);
    }
  }
  EXPECT_GT(gemm.cached_plans(), 0u);
  // A second call of a cached shape gives the same answer.
  run_case(gemm, {17, 136, 100, true, false, ElemType::BF16, ElemType::BF16}, rng);
}

// Shapes with several cuBLASLt candidates, tuned: the first T of each bucket (T rounded up to a power of two)
// times the candidates on its operands, later T of the bucket reuse the choice; in-place residuals included,
// on the default stream and on a non-blocking one.
TEST(CudaGemm, TunedMatchesCpuMatmul) {
  KILN_REQUIRE_GPU();
  DeviceBuffer<uint8_t> ws(32 << 20);
  cuda::Gemm gemm(ws.get(), ws.size(), kTuneEveryBucket);
  ASSERT_TRUE(gemm.tuning());
  cudaStream_t s = nullptr;
  KILN_TEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::mt19937 rng(11);
  for (ElemType t : {ElemType::BF16, ElemType::F16}) {
    for (int64_t T : {97, 100, 65, 300, 1, 3}) {  // 97, 100 and 65 share a bucket (128)
      run_case(gemm, {T, 1000, 520, false, false, t, t}, rng);
      run_case(gemm, {T, 1000, 520, true, true, t, t}, rng, s);                // 16-bit y += in place
      run_case(gemm, {T, 2048, 1032, true, true, t, ElemType::F32}, rng);      // fp32 residual stream (o, down)
      run_case(gemm, {T, 2048, 1032, false, true, t, ElemType::F32}, rng, s);  // the same on a non-default stream
      run_case(gemm, {T, 1536, 3000, true, false, t, ElemType::F32}, rng);     // gate_up / logits into fp32
      run_case(gemm, {T, 520, 264, false, false, t, t, 8, 24}, rng);           // strided rows
    }
  }
  EXPECT_GT(gemm.tuned_shapes(), 0u);
  EXPECT_LT(gemm.tuned_shapes(), gemm.cached_plans());  // the bucket's other T reused the tuned choice
  KILN_TEST_CUDA(cudaStreamDestroy(s));
}

// y += x·Wᵀ in place (C == D), tuned: each call adds the product exactly once, however many timing runs the
// first call made (after n calls y = r + n·P); also for a second T of the bucket.
TEST(CudaGemm, TunedResidualAddedExactlyOnce) {
  KILN_REQUIRE_GPU();
  DeviceBuffer<uint8_t> ws(32 << 20);
  cuda::Gemm gemm(ws.get(), ws.size(), kTuneEveryBucket);
  std::mt19937 rng(5);
  const int64_t in = 2048, out = 1032;
  for (int64_t T : {300, 260, 600}) {
    const Half16 x = testing::round16(testing::randn(T * in, rng), ElemType::BF16);
    const Half16 w = testing::round16(testing::randn(out * in, rng, 0.05f), ElemType::BF16);
    const std::vector<float> r = testing::randn(T * out, rng, 10.0f);
    std::vector<float> prod(T * out);
    cpu::matmul(x.f.data(), T, in, w.f.data(), out, nullptr, prod.data(), in, out);
    DeviceBuffer<uint16_t> dx(x.bits), dw(w.bits);
    DeviceBuffer<float> dy(r);
    const size_t tuned_before = gemm.tuned_shapes();
    for (int calls = 1; calls <= 2; ++calls) {
      gemm.run(ElemType::BF16, ElemType::F32, dx.get(), T, in, dw.get(), out, nullptr, dy.get(), dy.get(), nullptr);
      const std::vector<float> y = dy.download();
      std::vector<float> added(T * out), want(T * out);
      for (int64_t i = 0; i < T * out; ++i) added[i] = y[i] - r[i], want[i] = calls * prod[i];
      EXPECT_LT(testing::rel_err(added, want), 1e-4) << "T=" << T << " after " << calls << " call(s)";
    }
    if (T != 260)
      EXPECT_EQ(gemm.tuned_shapes(), tuned_before + 1) << "T=" << T << " starts a bucket: tuned";
    else
      EXPECT_EQ(gemm.tuned_shapes(), tuned_before) << "T=260 is in 300's bucket (512)";
  }
}

// A shape first seen while a stream is captured into a CUDA graph is planned without tuning (the heuristic's
// choice), and the graph computes it right; tuning is on by default from 1024 rows, tunes every bucket with a
// threshold of 1 row, and none when off; a threshold below 1 row is refused.
TEST(CudaGemm, NoTuningWhileCapturingOrWhenOffOrBelowThreshold) {
  KILN_REQUIRE_GPU();
  DeviceBuffer<uint8_t> ws(32 << 20);
  {
    cuda::Gemm gemm(ws.get(), ws.size(), kTuneEveryBucket);
    std::mt19937 rng(3);
    const int64_t T = 200, in = 1024, out = 776;
    const Half16 x = testing::round16(testing::randn(T * in, rng), ElemType::BF16);
    const Half16 w = testing::round16(testing::randn(out * in, rng, 0.05f), ElemType::BF16);
    const std::vector<float> r = testing::randn(T * out, rng);
    std::vector<float> want(T * out);
    cpu::matmul(x.f.data(), T, in, w.f.data(), out, nullptr, want.data(), in, out);
    for (int64_t i = 0; i < T * out; ++i) want[i] += r[i];
    DeviceBuffer<uint16_t> dx(x.bits), dw(w.bits);
    DeviceBuffer<float> dy(r);
    cudaStream_t s = nullptr;
    KILN_TEST_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    {
      // The heuristic's kernel for this shape, loaded outside the capture (as the model's eager run does).
      cuda::Gemm warm(ws.get(), ws.size(), {.tuning = false});
      DeviceBuffer<float> scratch(T * out);
      warm.run(ElemType::BF16, ElemType::F32, dx.get(), T, in, dw.get(), out, nullptr, scratch.get(), scratch.get(), s);
      KILN_TEST_CUDA(cudaStreamSynchronize(s));
    }
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    KILN_TEST_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    gemm.run(ElemType::BF16, ElemType::F32, dx.get(), T, in, dw.get(), out, nullptr, dy.get(), dy.get(), s);
    KILN_TEST_CUDA(cudaStreamEndCapture(s, &graph));
    EXPECT_EQ(gemm.tuned_shapes(), 0u);
    EXPECT_EQ(gemm.cached_plans(), 1u);
    KILN_TEST_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    KILN_TEST_CUDA(cudaGraphLaunch(exec, s));
    KILN_TEST_CUDA(cudaStreamSynchronize(s));
    EXPECT_LT(testing::rel_err(dy.download(), want), 1e-4);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    KILN_TEST_CUDA(cudaStreamDestroy(s));
  }
  // The options: by default tuning on for buckets of 1024 rows and more; a threshold of 1, every bucket; off, none;
  // a threshold below 1 row is refused.
  auto make = [&](const cuda::GemmOptions& o) { return std::make_unique<cuda::Gemm>(ws.get(), ws.size(), o); };
  auto all = make(kTuneEveryBucket);
  EXPECT_TRUE(all->tuning() && all->tuning_min_rows() == 1) << "tuning_min_rows 1 tunes every bucket";
  auto dflt = make({});
  EXPECT_TRUE(dflt->tuning() && dflt->tuning_min_rows() == 1024) << "on by default from 1024 rows";
  auto thr = make({.tuning_min_rows = 256});
  EXPECT_TRUE(thr->tuning() && thr->tuning_min_rows() == 256) << "tuning_min_rows";
  auto off = make({.tuning = false});
  EXPECT_FALSE(off->tuning());
  EXPECT_THROW(make({.tuning_min_rows = 0}), Error);
  std::mt19937 rng(4);
  run_case(*off, {300, 2048, 1032, true, true, ElemType::BF16, ElemType::F32}, rng);
  run_case(*off, {1100, 2048, 1032, true, true, ElemType::BF16, ElemType::F32}, rng);
  EXPECT_EQ(off->tuned_shapes(), 0u);
  // The default keeps the heuristic's choice below 1024 rows (bucket 512) and tunes above (bucket 2048).
  run_case(*dflt, {300, 2048, 1032, true, true, ElemType::BF16, ElemType::F32}, rng);
  EXPECT_EQ(dflt->tuned_shapes(), 0u);
  run_case(*dflt, {1100, 2048, 1032, true, true, ElemType::BF16, ElemType::F32}, rng);
  EXPECT_EQ(dflt->tuned_shapes(), 1u);
}

}  // namespace
}  // namespace kiln
