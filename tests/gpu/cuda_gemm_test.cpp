// cuBLASLt GEMM agrees with cpu::matmul (y = x·Wᵀ + bias + residual) on odd shapes, strides and types, 16-bit
// or fp32 y (an fp32 y with fp32 bias and residual: the logits and the fp32 residual stream).
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "kernels/cpu/ops.h"

namespace kiln {
namespace {

using cuda::ElemType;
using testing::DeviceBuffer;
using testing::Half16;

struct GemmCase {
  int64_t T, in, out;
  bool bias, residual;
  ElemType in_type, out_type;
  int64_t ldx_pad = 0, ldy_pad = 0;
};

void run_case(cuda::Gemm& gemm, const GemmCase& c, std::mt19937& rng) {
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
    gemm.run(c.in_type, c.out_type, dx.get(), c.T, c.in, dw.get(), c.out, c.bias ? db.get() : nullptr,
             c.residual ? dy.get() : nullptr, dy.get(), nullptr, ldx, ldy);
    got = dy.download();
  } else {
    DeviceBuffer<uint16_t> db(bias16.bits), dy(c.T * ldy);
    if (c.residual)
      dy.upload(res16.bits);
    else
      dy.poison();
    gemm.run(c.in_type, c.out_type, dx.get(), c.T, c.in, dw.get(), c.out, c.bias ? db.get() : nullptr,
             c.residual ? dy.get() : nullptr, dy.get(), nullptr, ldx, ldy);
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

}  // namespace
}  // namespace kiln
