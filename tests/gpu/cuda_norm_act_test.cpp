// The gated activation of a 16-bit gate|up buffer agrees with the CPU op on odd shapes; so do the ops of the fp32
// residual stream (norm_f32, embedding_f32, activation_f32, clamp, softcap).
#include <gtest/gtest.h>

#include <cmath>

#include "cuda_test_util.h"
#include "kernels/cpu/ops.h"

namespace kiln {
namespace {

using cuda::ElemType;
using testing::DeviceBuffer;
using testing::Half16;

constexpr ElemType kTypes[] = {ElemType::BF16, ElemType::F16};

TEST(CudaActivation, GatedMatchesCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(4);
  const std::pair<cuda::Act, cpu::Activation> acts[] = {{cuda::Act::SiLU, cpu::Activation::SiLU},
                                                        {cuda::Act::GeluTanh, cpu::Activation::GeluTanh},
                                                        {cuda::Act::GeluErf, cpu::Activation::GeluErf}};
  for (ElemType t : kTypes)
    for (auto [ga, ca] : acts)
      for (int64_t rows : {1, 3, 17})
        for (int64_t n : {100, 1024, 14336}) {
          // A fused gate_up GEMM output: [rows, 2n] with gate then up.
          const Half16 gu = testing::round16(testing::randn(rows * 2 * n, rng, 2.0f), t);
          std::vector<float> want(rows * n);
          cpu::gated_activation(gu.f.data(), gu.f.data() + n, want.data(), rows, n, 2 * n, ca);
          DeviceBuffer<uint16_t> dgu(gu.bits), dy(rows * n);
          dy.poison();
          cuda::gated_activation(t, dgu.get(), dgu.get() + n, dy.get(), rows, n, 2 * n, ga, nullptr);
          EXPECT_LT(testing::rel_err(testing::to_float(dy.download(), t), want), testing::tol16(t))
              << testing::type_name(t) << " act=" << static_cast<int>(ga) << " rows=" << rows << " n=" << n;
        }
}

// ---------------------------------------------------------------------------------------------
// The fp32 residual stream's ops.

TEST(CudaNormF32, MatchesCpuNorms) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(6);
  for (ElemType t : {ElemType::BF16, ElemType::F16, ElemType::F32})
    for (int64_t rows : {1, 5, 17})
      for (int64_t dim : {48, 50, 100, 4096, 5120, 12288})  // 50, 12288: the scalar kernel; the rest in registers
        for (int kind = 0; kind < 4; ++kind) {  // rms, rms (1 + w), layer (w, b), layer (no w, no b)
          const bool layer = kind >= 2;
          const std::vector<float> x = testing::randn(rows * dim, rng, 30.0f);
          std::vector<float> w = testing::randn(dim, rng, 0.5f), b = testing::randn(dim, rng, 0.5f);
          const bool with_w = kind != 3;
          std::vector<float> want(rows * dim);
          if (layer)
            cpu::layer_norm(x.data(), with_w ? w.data() : nullptr, with_w ? b.data() : nullptr, want.data(), rows,
                            dim, 1e-5f);
          else
            cpu::rms_norm(x.data(), w.data(), want.data(), rows, dim, 1e-6f, kind == 1);
          DeviceBuffer<float> dx(x), dw(w), db(b);
          std::vector<float> got;
          if (t == ElemType::F32) {
            DeviceBuffer<float> dy(rows * dim);
            dy.poison();
            cuda::norm_f32(t, layer, dx.get(), with_w ? dw.get() : nullptr, layer && with_w ? db.get() : nullptr,
                           dy.get(), rows, dim, layer ? 1e-5f : 1e-6f, kind == 1, false, nullptr, nullptr);
            got = dy.download();
          } else {
            DeviceBuffer<uint16_t> dy(rows * dim);
            dy.poison();
            cuda::norm_f32(t, layer, dx.get(), with_w ? dw.get() : nullptr, layer && with_w ? db.get() : nullptr,
                           dy.get(), rows, dim, layer ? 1e-5f : 1e-6f, kind == 1, false, nullptr, nullptr);
            got = testing::to_float(dy.download(), t);
          }
          EXPECT_LT(testing::rel_err(got, want), t == ElemType::F32 ? 1e-5 : testing::tol16(t))
              << testing::type_name(t) << " rows=" << rows << " dim=" << dim << " kind=" << kind;
        }
}

TEST(CudaNormF32, InPlaceGatherAndAccumulate) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(7);
  const int64_t rows = 9, dim = 200;
  const std::vector<float> x = testing::randn(rows * dim, rng, 3.0f), w = testing::randn(dim, rng),
                           b = testing::randn(dim, rng), y0 = testing::randn(rows * dim, rng, 10.0f);
  std::vector<float> normed(rows * dim);
  cpu::layer_norm(x.data(), w.data(), b.data(), normed.data(), rows, dim, 1e-5f);
  // In place (BLOOM's embedding LayerNorm).
  DeviceBuffer<float> dx(x), dw(w), db(b);
  cuda::norm_f32(ElemType::F32, true, dx.get(), dw.get(), db.get(), dx.get(), rows, dim, 1e-5f, false, false, nullptr,
                 nullptr);
  EXPECT_LT(testing::rel_err(dx.download(), normed), 1e-5) << "in place";
  // Accumulate into y (Gemma 2's post-norm into the residual), RMS with (1 + w).
  std::vector<float> rms(rows * dim), want = y0;
  cpu::rms_norm(x.data(), w.data(), rms.data(), rows, dim, 1e-6f, true);
  for (size_t i = 0; i < want.size(); ++i) want[i] += rms[i];
  DeviceBuffer<float> dx2(x), dy(y0);
  cuda::norm_f32(ElemType::F32, false, dx2.get(), dw.get(), nullptr, dy.get(), rows, dim, 1e-6f, true, true, nullptr,
                 nullptr);
  EXPECT_LT(testing::rel_err(dy.download(), want), 1e-5) << "accumulate";
  // Gather rows 8, 0, 3 into a 16-bit output (the logit rows before lm_head).
  const std::vector<int32_t> pick = {8, 0, 3};
  std::vector<float> gwant;
  for (int32_t r : pick) gwant.insert(gwant.end(), normed.begin() + r * dim, normed.begin() + (r + 1) * dim);
  DeviceBuffer<int32_t> didx(pick);
  DeviceBuffer<uint16_t> dg(pick.size() * dim);
  dg.poison();
  cuda::norm_f32(ElemType::BF16, true, dx2.get(), dw.get(), db.get(), dg.get(), 3, dim, 1e-5f, false, false, didx.get(),
                 nullptr);
  EXPECT_LT(testing::rel_err(testing::to_float(dg.download(), ElemType::BF16), gwant), testing::tol16(ElemType::BF16))
      << "gather";
}

TEST(CudaEmbeddingF32, ScaleAndLearnedPositions) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(8);
  for (ElemType t : kTypes)
    for (bool positions : {false, true}) {
      const int64_t vocab = 500, dim = 96, T = 13, n_pos = 40;
      const Half16 table = testing::round16(testing::randn(vocab * dim, rng), t);
      const Half16 pos = testing::round16(testing::randn(n_pos * dim, rng), t);
      std::vector<int32_t> ids(T), ps(T);
      std::vector<int64_t> ps64(T);
      for (int64_t i = 0; i < T; ++i) ids[i] = static_cast<int32_t>(rng() % vocab), ps64[i] = ps[i] = 3 * i % n_pos;
      const float scale = positions ? 1.0f : 6.928203f;
      std::vector<float> want(T * dim);
      cpu::embedding(table.f.data(), vocab, dim, ids.data(), T, want.data());
      cpu::scale_inplace(want.data(), T * dim, scale);
      if (positions) cpu::add_position_embedding(pos.f.data(), n_pos, dim, ps64.data(), T, want.data());
      DeviceBuffer<uint16_t> dt(table.bits), dp(pos.bits);
      DeviceBuffer<int32_t> did(ids), dpos(ps);
      DeviceBuffer<float> dy(T * dim);
      dy.poison();
      cuda::embedding_f32(t, dt.get(), vocab, dim, did.get(), T, scale, positions ? dp.get() : nullptr, n_pos,
                          dpos.get(), dy.get(), nullptr);
      EXPECT_EQ(testing::rel_err(dy.download(), want), 0.0) << testing::type_name(t) << " positions=" << positions;
    }
}

// An id or a position out of range contributes zeros (the caller validates them on the host): rows of ones, position
// rows of twos.
TEST(CudaEmbeddingF32, OutOfRangeIdsAndPositionsGiveZeros) {
  KILN_REQUIRE_GPU();
  const int64_t vocab = 10, n_pos = 40, dim = 16;
  DeviceBuffer<uint16_t> table(std::vector<uint16_t>(vocab * dim, f32_to_bf16(1.0f)));
  DeviceBuffer<uint16_t> pos_table(std::vector<uint16_t>(n_pos * dim, f32_to_bf16(2.0f)));
  // (id, position): (-1, 0) gives 0 + 2, (10, 40) gives 0 + 0, (3, -1) gives 1 + 0.
  DeviceBuffer<int32_t> ids(std::vector<int32_t>{-1, 10, 3}), positions(std::vector<int32_t>{0, 40, -1});
  DeviceBuffer<float> out(3 * dim);
  out.poison();
  cuda::embedding_f32(ElemType::BF16, table.get(), vocab, dim, ids.get(), 3, 1.0f, pos_table.get(), n_pos,
                      positions.get(), out.get(), nullptr);
  const std::vector<float> got = out.download();
  const float want[3] = {2.0f, 0.0f, 1.0f};
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t i = 0; i < dim; ++i) EXPECT_EQ(got[t * dim + i], want[t]) << "row " << t << " dim " << i;
}

TEST(CudaActivationF32, GatedAndPlainMatchCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(9);
  const std::pair<cuda::Act, cpu::Activation> acts[] = {{cuda::Act::SiLU, cpu::Activation::SiLU},
                                                        {cuda::Act::GeluTanh, cpu::Activation::GeluTanh},
                                                        {cuda::Act::GeluErf, cpu::Activation::GeluErf}};
  for (ElemType t : kTypes)
    for (auto [ga, ca] : acts)
      for (bool gated : {false, true})
        for (int64_t rows : {1, 17})
          for (int64_t n : {100, 1000, 102}) {  // 102: the scalar kernel
            const int64_t ld = gated ? 2 * n : n;
            const std::vector<float> in = testing::randn(rows * ld, rng, 2.0f);
            std::vector<float> want(rows * n);
            if (gated) {
              cpu::gated_activation(in.data(), in.data() + n, want.data(), rows, n, ld, ca);
            } else {
              want = in;
              cpu::activation(want.data(), rows * n, ca);
            }
            DeviceBuffer<float> din(in);
            DeviceBuffer<uint16_t> dy(rows * n);
            dy.poison();
            cuda::activation_f32(t, din.get(), ld, dy.get(), rows, n, ga, gated, nullptr);
            EXPECT_LT(testing::rel_err(testing::to_float(dy.download(), t), want), testing::tol16(t))
                << testing::type_name(t) << " act=" << static_cast<int>(ga) << " gated=" << gated << " n=" << n;
          }
}

// f16 stores that feed a GEMM saturate at +-65504 (the automatic f16 compute type of bf16 checkpoints) instead of
// becoming infinite; NaN stays NaN, and bf16 keeps its range.
TEST(CudaActivationF32, F16StoresSaturate) {
  KILN_REQUIRE_GPU();
  const int64_t n = 4;
  // gate|up rows: SiLU(gate) * up = 1e5 * 2, -3e5 * 1 (SiLU(x) ~ x for large x), NaN, 1.5.
  const std::vector<float> in = {1e5f, 3e5f, std::nanf(""), 1.0f, 2.0f, -1.0f, 1.0f, 3.0f};
  std::vector<float> silu = {1e5f, 3e5f, std::nanf(""), 1.0f};
  cpu::gated_activation(in.data(), in.data() + n, silu.data(), 1, n, 2 * n, cpu::Activation::SiLU);
  DeviceBuffer<float> din(in);
  for (ElemType t : kTypes) {
    DeviceBuffer<uint16_t> dy(n);
    cuda::activation_f32(t, din.get(), 2 * n, dy.get(), 1, n, cuda::Act::SiLU, true, nullptr);
    const std::vector<float> got = testing::to_float(dy.download(), t);
    if (t == ElemType::F16) {
      EXPECT_EQ(got[0], 65504.0f);
      EXPECT_EQ(got[1], -65504.0f);
    } else {
      EXPECT_NEAR(got[0], silu[0], 1e-2 * std::fabs(silu[0]));
      EXPECT_NEAR(got[1], silu[1], 1e-2 * std::fabs(silu[1]));
    }
    EXPECT_TRUE(std::isnan(got[2])) << testing::type_name(t);
    EXPECT_NEAR(got[3], silu[3], 1e-2) << testing::type_name(t);
  }
  // The 16-bit gated activation (the model's gate|up in f16): 300 * SiLU(300) and -200 * SiLU(400) are past the
  // f16 range; 8 columns take the 16-byte path, the first 4 the scalar one.
  {
    const std::vector<float> gu = {300.0f, 400.0f, std::nanf(""), 1.0f, 0.5f, 0.5f, 0.5f, 0.5f,
                                   300.0f, -200.0f, 1.0f, 3.0f, 2.0f, 2.0f, 2.0f, 2.0f};
    DeviceBuffer<uint16_t> dgu(testing::round16(gu, ElemType::F16).bits);
    for (int64_t cols : {8, 4}) {
      DeviceBuffer<uint16_t> dy(cols);
      cuda::gated_activation(ElemType::F16, dgu.get(), dgu.get() + 8, dy.get(), 1, cols, 16, cuda::Act::SiLU, nullptr);
      const std::vector<float> got = testing::to_float(dy.download(), ElemType::F16);
      EXPECT_EQ(got[0], 65504.0f) << cols;
      EXPECT_EQ(got[1], -65504.0f) << cols;
      EXPECT_TRUE(std::isnan(got[2])) << cols;
      EXPECT_NEAR(got[3], 3.0f / (1.0f + std::exp(-1.0f)), 1e-2) << cols;
    }
  }
  // The norm's 16-bit output: a row whose normalized value times its weight is 2e5.
  const int64_t dim = 64;
  std::vector<float> x(dim, 0.0f), w(dim, 1.0f);
  x[0] = 1.0f;
  w[0] = 2e5f / 8.0f;  // rms of x is 1/8, so x[0] normalizes to 8
  DeviceBuffer<float> dx(x), dw(w);
  DeviceBuffer<uint16_t> dy(dim);
  cuda::norm_f32(ElemType::F16, false, dx.get(), dw.get(), nullptr, dy.get(), 1, dim, 0.0f, false, false, nullptr,
                 nullptr);
  EXPECT_EQ(testing::to_float(dy.download(), ElemType::F16)[0], 65504.0f);
}

TEST(CudaClampSoftcap, MatchCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(10);
  for (ElemType t : kTypes) {
    const Half16 x = testing::round16(testing::randn(1001, rng, 3.0f), t);
    std::vector<float> want = x.f;
    cpu::clamp(want.data(), static_cast<int64_t>(want.size()), -1.5f, 1.5f);
    DeviceBuffer<uint16_t> dx(x.bits);
    cuda::clamp(t, dx.get(), static_cast<int64_t>(x.bits.size()), -1.5f, 1.5f, nullptr);
    EXPECT_EQ(testing::rel_err(testing::to_float(dx.download(), t), want), 0.0) << testing::type_name(t);
  }
  const std::vector<float> logits = testing::randn(70001, rng, 40.0f);
  std::vector<float> want = logits;
  cpu::softcap(want.data(), static_cast<int64_t>(want.size()), 30.0f);
  DeviceBuffer<float> dl(logits);
  cuda::softcap(dl.get(), static_cast<int64_t>(logits.size()), 30.0f, nullptr);
  EXPECT_LT(testing::rel_err(dl.download(), want), 1e-6);
}

}  // namespace
}  // namespace kiln
