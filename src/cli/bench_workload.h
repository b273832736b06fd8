// The workloads of `kiln bench`: prompt and output lengths (fixed or drawn), random prompts, JSONL
// datasets, and Poisson arrival times.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace kiln {
class Tokenizer;
}

namespace kiln::cli {

// A length: "N" (fixed), "uniform:LO:HI" (integers, both ends included) or "normal:MEAN:STD" (rounded,
// at least 1).
struct LengthDist {
  enum class Kind { Fixed, Uniform, Normal };
  Kind kind = Kind::Fixed;
  double a = 0.0;  // Fixed: the length; Uniform: LO; Normal: MEAN
  double b = 0.0;  // Uniform: HI; Normal: STD
  std::string spec;

  int64_t sample(std::mt19937_64& rng) const;
};

// Parses a length spec; `flag` names the flag in errors (kiln::Error).
LengthDist parse_length_dist(const std::string& spec, const char* flag);

struct BenchRequest {
  std::vector<int32_t> prompt;
  int64_t output_len = 0;
};

// n requests whose prompts are token ids drawn uniformly from [0, vocab) with lengths from `isl`, and
// whose output lengths come from `osl`; the same for the same seed.
std::vector<BenchRequest> synthetic_workload(int64_t n, const LengthDist& isl, const LengthDist& osl, int64_t vocab,
                                             uint64_t seed);

// A JSONL file, one request a line: {"prompt": "text"} (tokenized with `tokenizer`, special tokens added)
// or {"prompt_ids": [ids]}, and {"output_len": N}. Blank lines are skipped. Takes the first `limit`
// requests (0: all); errors name the file and line.
std::vector<BenchRequest> read_dataset(const std::string& path, const Tokenizer* tokenizer, int64_t limit);

// Arrival times in seconds from the start for n requests at `rate` requests per second, exponentially
// spaced (a Poisson process) with the first at 0; rate <= 0 or infinite: all at 0.
std::vector<double> poisson_arrivals(int64_t n, double rate, uint64_t seed);

}  // namespace kiln::cli
