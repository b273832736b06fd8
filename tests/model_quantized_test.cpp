// Quantized weights through Linear on the CPU backend: a fixture loaded with its linears quantized at load (int8 and
// fp8 per channel, int4 per group, fp8 weights with fp8 activations) against the same fixture whose checkpoint holds
// the dequantized f32 values. Weight-only formats must give the f32 result bit for bit (cpu::linear dequantizes
// exactly as dequantize_row defines); fp8 activations are checked against the CPU emulation's own definition.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/block_formats.h"
#include "fixtures/io/io_writers.h"
#include "io/safetensors.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/ops.h"
#include "kiln/error.h"
#include "kiln/model.h"
#include "model/decoder_weights.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = fs::path(KILN_SOURCE_DIR) / "tests" / "fixtures" / "models";

// Whether an HF Llama-family tensor name is a linear layer's weight (quantized at load).
bool is_layer_linear(const std::string& n) {
  for (const char* p : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                        "up_proj.weight", "down_proj.weight"})
    if (n.size() > std::strlen(p) && n.compare(n.size() - std::strlen(p), std::strlen(p), p) == 0) return true;
  return false;
}

// A copy of fixture `name` whose layer linears hold dequantize(quantize(w)) in f32 (per row, as the loader quantizes
// each row of the fused q|k|v and gate|up on its own).
fs::path dequantized_copy(const std::string& name, const LinearFormat& f) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("kiln_quantized_" + name + "_" + format_name(f));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(kFixtures / name / "config.json", dir / "config.json");
  io::SafetensorsCheckpoint ck((kFixtures / name).string());
  std::vector<kiln_test::StTensor> out;
  for (const std::string& n : ck.names()) {
    const io::TensorEntry& e = ck.get(n);
    std::vector<float> v(static_cast<size_t>(shape_numel(e.shape)));
    convert_to_f32(e.dtype, e.data, v.data(), v.size());
    if (is_layer_linear(n)) {
      const HostLinear q = quantize_linear(v.data(), e.shape[0], e.shape[1], f);
      const Linear l = q.view();
      for (int64_t r = 0; r < e.shape[0]; ++r) dequantize_row(l, r, v.data() + r * e.shape[1]);
    }
    out.push_back({n, "F32", e.shape, kiln_test::bytes_of(v)});
  }
  kiln_test::write_file((dir / "model.safetensors").string(), kiln_test::make_safetensors(out));
  return dir;
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& prompt) {
  auto st = m.new_state(64);
  std::vector<float> logits;
  m.forward(*st, prompt, logits, /*all_logits=*/true);
  return logits;
}

TEST(QuantizedWeights, WeightOnlyFormatsEqualTheirDequantizedF32Exactly) {
  for (const char* name : {"llama2-mha-f32", "llama3-gqa-bf16", "qwen2-tied-bias", "llama-mqa-hd128-f16"}) {
    for (Quantization q : {Quantization::Int8WeightOnly, Quantization::Fp8WeightOnly, Quantization::Int4WeightOnly}) {
      SCOPED_TRACE(std::string(name) + " " + quantization_name(q));
      LoadOptions lo;
      lo.quantization = q;
      const LinearFormat f = *quantized_format(q);
      if (q == Quantization::Int4WeightOnly) {
        // Groups of 128 need inputs that are multiples of 128; the small fixtures are refused by name.
        const auto c = Model::load((kFixtures / name).string())->config();
        if (c.hidden_size % 128 != 0 || c.intermediate_size % 128 != 0 || (c.num_heads * c.head_dim) % 128 != 0) {
          EXPECT_THROW(Model::load((kFixtures / name).string(), lo), Error);
          continue;
        }
      }
      auto quantized = Model::load((kFixtures / name).string(), lo);
      auto reference = Model::load(dequantized_copy(name, f).string());
      // The linears are stored quantized (a quarter or half the f32 bytes), and say so.
      for (const LinearInfo& li : quantized->linears())
        if (li.name.rfind("layers.", 0) == 0) EXPECT_NE(li.format.find(q == Quantization::Int8WeightOnly ? "int8" : q == Quantization::Fp8WeightOnly ? "fp8" : "int4"), std::string::npos) << li.name << " " << li.format;
      EXPECT_LT(quantized->weight_bytes(), reference->weight_bytes());
      std::mt19937 rng(5);
      std::vector<int32_t> prompt(23);
      for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % quantized->config().vocab_size);
      const std::vector<float> a = logits_of(*quantized, prompt), b = logits_of(*reference, prompt);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
      // And the quantization changed something (the test compares two different models otherwise).
      const std::vector<float> full = logits_of(*Model::load((kFixtures / name).string()), prompt);
      EXPECT_NE(std::memcmp(a.data(), full.data(), a.size() * sizeof(float)), 0);
    }
  }
}

// fp8 weights with dynamic per-token fp8 activations: cpu::linear equals its definition, computed here directly
// (rows scaled by amax / 448 and rounded to e4m3, products summed in f64 then compared with a bound far below the
// rounding the format itself introduces).
TEST(QuantizedWeights, Fp8ActivationsFollowTheirDefinition) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto [T, in, out] : {std::tuple{1, 64, 48}, std::tuple{7, 130, 33}, std::tuple{33, 256, 96}}) {
    std::vector<float> w(static_cast<size_t>(out * in)), x(static_cast<size_t>(T * in));
    for (float& v : w) v = nd(rng);
    for (float& v : x) v = 3.0f * nd(rng);
    LinearFormat f;
    f.weight = DType::F8E4M3, f.scale = ScaleKind::PerChannel, f.act = ActQuant::Fp8PerToken;
    const HostLinear q = quantize_linear(w.data(), out, in, f);
    std::vector<float> y(static_cast<size_t>(T * out));
    cpu::linear(q.view(), x.data(), T, y.data());
    for (int t = 0; t < T; ++t) {
      float amax = 0;
      for (int i = 0; i < in; ++i) amax = std::max(amax, std::fabs(x[t * in + i]));
      const float sx = amax / 448.0f;
      for (int o = 0; o < out; ++o) {
        double acc = 0;
        for (int i = 0; i < in; ++i)
          acc += static_cast<double>(round_to_fp8_e4m3(x[t * in + i] / sx)) * fp8_e4m3_to_f32(q.weight[o * in + i]);
        const double want = acc * sx * q.scales[o];
        EXPECT_NEAR(y[t * out + o], want, 1e-5 * (std::fabs(want) + 1.0)) << T << "x" << in << " row " << t << " " << o;
      }
    }
  }
}

// Every weight-only format through cpu::linear equals cpu::matmul over its dequantized rows bit for bit, on odd shapes
// (int4 in groups of 32 here; GGUF's blocks from the simple quantizers).
TEST(QuantizedWeights, LinearOfEveryFormatEqualsMatmulOfItsDequantizedRows) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t T = 5, in = 96, out = 37;
  std::vector<float> w(static_cast<size_t>(out * in)), x(static_cast<size_t>(T * in));
  for (float& v : w) v = nd(rng);
  for (float& v : x) v = nd(rng);
  std::vector<float> bias(static_cast<size_t>(out));
  for (float& v : bias) v = nd(rng);
  std::vector<HostLinear> cases;
  for (LinearFormat f : {LinearFormat{DType::I8, ScaleKind::PerChannel}, LinearFormat{DType::F8E4M3, ScaleKind::PerTensor},
                         LinearFormat{DType::F8E4M3, ScaleKind::PerChannel},
                         LinearFormat{DType::U4, ScaleKind::PerGroup, 32, true}})
    cases.push_back(quantize_linear(w.data(), out, in, f));
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    HostLinear h;
    h.format.weight = t;
    h.out = out;
    h.in = in;
    h.weight.resize(dtype_bytes(t, out * in));
    quantize_blocks(t, w.data(), h.weight.data(), out * in);
    cases.push_back(std::move(h));
  }
  for (HostLinear& h : cases) {
    SCOPED_TRACE(format_name(h.format));
    h.bias = bias;
    const Linear l = h.view();
    std::vector<float> deq(static_cast<size_t>(out * in));
    for (int64_t r = 0; r < out; ++r) dequantize_row(l, r, deq.data() + r * in);
    std::vector<float> a(static_cast<size_t>(T * out)), b(a.size());
    cpu::linear(l, x.data(), T, a.data());
    cpu::matmul(x.data(), T, in, deq.data(), out, bias.data(), b.data());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
    // The dequantized weights are close to the originals (so the format is the one claimed).
    double err = 0, norm = 0;
    for (size_t i = 0; i < w.size(); ++i) err += (deq[i] - w[i]) * (deq[i] - w[i]), norm += w[i] * w[i];
    EXPECT_LT(std::sqrt(err / norm), h.format.weight == DType::U4 || h.format.weight == DType::Q4_0 ||
                                             h.format.weight == DType::Q4_1
                                         ? 0.15
                                         : 0.05);
  }
}

TEST(QuantizedWeights, UnknownQuantizationIsRefusedByName) {
  try {
    parse_quantization("gptq");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gptq"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_quantization("int8-wo"), Quantization::Int8WeightOnly);
}

}  // namespace
}  // namespace kiln
