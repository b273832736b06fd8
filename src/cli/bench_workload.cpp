// `kiln bench` workloads: length specs, random prompts, JSONL datasets, Poisson arrivals.
#include "cli/bench_workload.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "kiln/error.h"
#include "kiln/tokenizer.h"

namespace kiln::cli {

namespace {

double parse_number(const std::string& s, const std::string& spec, const char* flag) {
  double v = 0.0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  KILN_CHECK(!s.empty() && ec == std::errc() && ptr == s.data() + s.size() && std::isfinite(v),
             "{} '{}': '{}' is not a number", flag, spec, s);
  return v;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t pos = 0;
  for (;;) {
    const size_t end = s.find(sep, pos);
    parts.push_back(s.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
    if (end == std::string::npos) return parts;
    pos = end + 1;
  }
}

}  // namespace

LengthDist parse_length_dist(const std::string& spec, const char* flag) {
  const std::vector<std::string> p = split(spec, ':');
  LengthDist d;
  d.spec = spec;
  const char* forms = "N, uniform:LO:HI or normal:MEAN:STD";
  if (p.size() == 1 || (p.size() == 2 && p[0] == "fixed")) {
    d.kind = LengthDist::Kind::Fixed;
    d.a = parse_number(p.back(), spec, flag);
    KILN_CHECK(d.a >= 1 && d.a == std::floor(d.a), "{} '{}': the length must be an integer >= 1", flag, spec);
  } else if (p.size() == 3 && p[0] == "uniform") {
    d.kind = LengthDist::Kind::Uniform;
    d.a = parse_number(p[1], spec, flag);
    d.b = parse_number(p[2], spec, flag);
    KILN_CHECK(d.a >= 1 && d.a == std::floor(d.a) && d.b == std::floor(d.b) && d.b >= d.a,
               "{} '{}': uniform needs integers 1 <= LO <= HI", flag, spec);
  } else if (p.size() == 3 && p[0] == "normal") {
    d.kind = LengthDist::Kind::Normal;
    d.a = parse_number(p[1], spec, flag);
    d.b = parse_number(p[2], spec, flag);
    KILN_CHECK(d.a >= 1 && d.b >= 0, "{} '{}': normal needs MEAN >= 1 and STD >= 0", flag, spec);
  } else {
    KILN_THROW("{} '{}': expected {}", flag, spec, forms);
  }
  KILN_CHECK(d.a <= 1e7 && d.b <= 1e7, "{} '{}': lengths above 10 million tokens are not supported", flag, spec);
  return d;
}

int64_t LengthDist::sample(std::mt19937_64& rng) const {
  switch (kind) {
    case Kind::Fixed:
      return static_cast<int64_t>(a);
    case Kind::Uniform:
      return std::uniform_int_distribution<int64_t>(static_cast<int64_t>(a), static_cast<int64_t>(b))(rng);
    case Kind::Normal: {
      if (b == 0) return std::max<int64_t>(1, static_cast<int64_t>(std::round(a)));
      const double v = std::round(std::normal_distribution<double>(a, b)(rng));
      return std::max<int64_t>(1, static_cast<int64_t>(v));
    }
  }
  return 1;
}

std::vector<BenchRequest> synthetic_workload(int64_t n, const LengthDist& isl, const LengthDist& osl, int64_t vocab,
                                             uint64_t seed) {
  KILN_CHECK(vocab > 0, "synthetic workload: empty vocabulary");
  // Separate streams, so that changing one distribution leaves the other's draws as they were.
  std::mt19937_64 len_rng(seed * 3 + 1), out_rng(seed * 3 + 2), ids_rng(seed * 3 + 3);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(std::min<int64_t>(vocab, INT32_MAX) - 1));
  std::vector<BenchRequest> reqs(static_cast<size_t>(n));
  for (BenchRequest& r : reqs) {
    r.prompt.resize(static_cast<size_t>(isl.sample(len_rng)));
    for (int32_t& t : r.prompt) t = id(ids_rng);
    r.output_len = osl.sample(out_rng);
  }
  return reqs;
}

std::vector<BenchRequest> read_dataset(const std::string& path, const Tokenizer* tokenizer, int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), "--dataset {}: cannot open it", path);
  std::vector<BenchRequest> reqs;
  std::string line;
  for (int64_t n = 1; std::getline(in, line) && (limit == 0 || static_cast<int64_t>(reqs.size()) < limit); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      KILN_THROW("--dataset {}: line {} is not JSON: {}", path, n, e.what());
    }
    KILN_CHECK(j.is_object(), "--dataset {}: line {} is not a JSON object", path, n);
    BenchRequest r;
    const auto ids = j.find("prompt_ids");
    const auto text = j.find("prompt");
    KILN_CHECK((ids != j.end()) != (text != j.end()),
               "--dataset {}: line {} needs exactly one of 'prompt' and 'prompt_ids'", path, n);
    if (ids != j.end()) {
      KILN_CHECK(ids->is_array() && !ids->empty(), "--dataset {}: line {}: 'prompt_ids' must be a non-empty list", path,
                 n);
      for (const auto& v : *ids) {
        KILN_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX,
                   "--dataset {}: line {}: 'prompt_ids' holds {}, not a token id", path, n, v.dump());
        r.prompt.push_back(static_cast<int32_t>(v.get<int64_t>()));
      }
    } else {
      KILN_CHECK(text->is_string(), "--dataset {}: line {}: 'prompt' must be a string", path, n);
      KILN_CHECK(tokenizer != nullptr,
                 "--dataset {}: line {} has a text prompt but there is no tokenizer (give --tokenizer, or use "
                 "'prompt_ids')",
                 path, n);
      r.prompt = tokenizer->encode(text->get<std::string>(), /*add_special=*/true);
      KILN_CHECK(!r.prompt.empty(), "--dataset {}: line {}: the prompt is empty after tokenization", path, n);
    }
    const auto out = j.find("output_len");
    KILN_CHECK(out != j.end() && out->is_number_integer() && out->get<int64_t>() >= 1,
               "--dataset {}: line {}: 'output_len' must be an integer >= 1", path, n);
    r.output_len = out->get<int64_t>();
    reqs.push_back(std::move(r));
  }
  KILN_CHECK(!reqs.empty(), "--dataset {}: no requests in it", path);
  return reqs;
}

std::vector<double> poisson_arrivals(int64_t n, double rate, uint64_t seed) {
  std::vector<double> t(static_cast<size_t>(n), 0.0);
  if (!(rate > 0) || std::isinf(rate)) return t;
  std::mt19937_64 rng(seed * 3 + 4);
  std::exponential_distribution<double> gap(rate);
  for (size_t i = 1; i < t.size(); ++i) t[i] = t[i - 1] + gap(rng);
  return t;
}

}  // namespace kiln::cli
