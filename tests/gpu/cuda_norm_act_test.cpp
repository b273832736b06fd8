// Norms (+ residual), gated activations and the embedding gather agree with the CPU ops on odd shapes.
#include <gtest/gtest.h>

#include "cuda_test_util.h"
#include "kernels/cpu/ops.h"

namespace kiln {
namespace {

using cuda::ElemType;
using testing::DeviceBuffer;
using testing::Half16;

constexpr ElemType kTypes[] = {ElemType::BF16, ElemType::F16};

TEST(CudaNorm, RmsNormMatchesCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(1);
  for (ElemType t : kTypes)
    for (int64_t rows : {1, 3, 17})
      for (int64_t dim : {8, 100, 4096, 5120, 10240})
        for (bool add_one : {false, true})
          for (bool with_w : {true, false}) {
            const Half16 x = testing::round16(testing::randn(rows * dim, rng, 2.0f), t);
            const Half16 w = testing::round16(testing::randn(dim, rng, 0.5f), t);
            std::vector<float> want(rows * dim);
            cpu::rms_norm(x.f.data(), with_w ? w.f.data() : nullptr, want.data(), rows, dim, 1e-5f, add_one);
            DeviceBuffer<uint16_t> dx(x.bits), dw(w.bits), dy(rows * dim);
            dy.poison();
            cuda::rms_norm(t, dx.get(), with_w ? dw.get() : nullptr, dy.get(), rows, dim, 1e-5f, add_one, nullptr);
            EXPECT_LT(testing::rel_err(testing::to_float(dy.download(), t), want), testing::tol16(t))
                << testing::type_name(t) << " rows=" << rows << " dim=" << dim << " add_one=" << add_one;
          }
}

TEST(CudaNorm, StridedRmsNorm) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(2);
  const ElemType t = ElemType::BF16;
  const int64_t rows = 17, dim = 128, ldx = 384, ldy = 136;  // e.g. q heads inside a qkv row
  const Half16 x = testing::round16(testing::randn(rows * ldx, rng), t);
  const Half16 w = testing::round16(testing::randn(dim, rng), t);
  std::vector<float> want(rows * ldy, 0.0f);
  cpu::rms_norm(x.f.data(), w.f.data(), want.data(), rows, dim, 1e-6f, false, ldx, ldy);
  DeviceBuffer<uint16_t> dx(x.bits), dw(w.bits), dy(rows * ldy);
  dy.poison();
  cuda::rms_norm(t, dx.get(), dw.get(), dy.get(), rows, dim, 1e-6f, false, nullptr, ldx, ldy);
  const auto got = testing::to_float(dy.download(), t);
  std::vector<float> g, wv;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < dim; ++i) g.push_back(got[r * ldy + i]), wv.push_back(want[r * ldy + i]);
  EXPECT_LT(testing::rel_err(g, wv), testing::tol16(t));
}

TEST(CudaNorm, AddRmsNormAndLayerNormMatchCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(3);
  for (ElemType t : kTypes)
    for (int64_t rows : {1, 3, 17})
      for (int64_t dim : {100, 4096})
        for (bool layer : {false, true})
          for (bool residual : {false, true}) {
            const Half16 x = testing::round16(testing::randn(rows * dim, rng), t);
            const Half16 r = testing::round16(testing::randn(rows * dim, rng, 3.0f), t);
            const Half16 w = testing::round16(testing::randn(dim, rng), t);
            const Half16 b = testing::round16(testing::randn(dim, rng), t);
            // The residual stream is stored rounded, and the norm reads it back.
            std::vector<float> sum(rows * dim);
            for (size_t i = 0; i < sum.size(); ++i)
              sum[i] = residual ? testing::from_bits(testing::to_bits(r.f[i] + x.f[i], t), t) : x.f[i];
            std::vector<float> want(rows * dim);
            if (layer)
              cpu::layer_norm(sum.data(), w.f.data(), b.f.data(), want.data(), rows, dim, 1e-5f);
            else
              cpu::rms_norm(sum.data(), w.f.data(), want.data(), rows, dim, 1e-5f);
            DeviceBuffer<uint16_t> dx(x.bits), dr(r.bits), dw(w.bits), db(b.bits), dy(rows * dim);
            dy.poison();
            if (layer && residual)
              cuda::add_layer_norm(t, dx.get(), dr.get(), dw.get(), db.get(), dy.get(), rows, dim, 1e-5f, nullptr);
            else if (layer)
              cuda::layer_norm(t, dx.get(), dw.get(), db.get(), dy.get(), rows, dim, 1e-5f, nullptr);
            else if (residual)
              cuda::add_rms_norm(t, dx.get(), dr.get(), dw.get(), dy.get(), rows, dim, 1e-5f, false, nullptr);
            else
              cuda::rms_norm(t, dx.get(), dw.get(), dy.get(), rows, dim, 1e-5f, false, nullptr);
            const std::string what = std::string(testing::type_name(t)) + " rows=" + std::to_string(rows) +
                                     " dim=" + std::to_string(dim) + (layer ? " layer" : " rms") +
                                     (residual ? " +residual" : "");
            EXPECT_LT(testing::rel_err(testing::to_float(dy.download(), t), want), testing::tol16(t)) << what;
            if (residual) EXPECT_EQ(testing::rel_err(testing::to_float(dr.download(), t), sum), 0.0) << what;
          }
}

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

TEST(CudaEmbedding, GatherMatchesCpu) {
  KILN_REQUIRE_GPU();
  std::mt19937 rng(5);
  for (ElemType t : kTypes)
    for (int64_t dim : {100, 4096})
      for (int64_t T : {1, 17, 300}) {
        const int64_t vocab = 1000;
        const Half16 table = testing::round16(testing::randn(vocab * dim, rng), t);
        std::vector<int32_t> ids(T);
        std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
        for (auto& id : ids) id = pick(rng);
        std::vector<float> want(T * dim);
        cpu::embedding(table.f.data(), vocab, dim, ids.data(), T, want.data());
        DeviceBuffer<uint16_t> dt(table.bits), dy(T * dim);
        DeviceBuffer<int32_t> did(ids);
        dy.poison();
        cuda::embedding(t, dt.get(), vocab, dim, did.get(), T, dy.get(), nullptr);
        EXPECT_EQ(testing::rel_err(testing::to_float(dy.download(), t), want), 0.0) << "dim=" << dim << " T=" << T;
      }
}

TEST(CudaEmbedding, OutOfRangeIdGivesZeros) {
  KILN_REQUIRE_GPU();
  const int64_t vocab = 10, dim = 16;
  DeviceBuffer<uint16_t> table(std::vector<uint16_t>(vocab * dim, f32_to_bf16(1.0f))), out(2 * dim);
  DeviceBuffer<int32_t> ids(std::vector<int32_t>{-1, 10});
  out.poison();
  cuda::embedding(ElemType::BF16, table.get(), vocab, dim, ids.get(), 2, out.get(), nullptr);
  for (uint16_t b : out.download()) EXPECT_EQ(bf16_to_f32(b), 0.0f);
}

}  // namespace
}  // namespace kiln
