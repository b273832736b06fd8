// Reads a llama2.c tokenizer .bin (int32 max_token_length, then per token: float32 score, int32
// length, bytes) into a SentencePiece-by-score tokenizer: pieces spell ▁ as a plain space, id 0 is
// <unk>, 1 BOS, 2 EOS, and <0xNN> byte tokens are used when the vocabulary has them.
#include <cstring>

#include "core/mapped_file.h"
#include "kiln/error.h"
#include "tokenizer/pipeline_tokenizer.h"

namespace kiln::tok {

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path) {
  MappedFile file(path);
  const uint8_t* p = file.data();
  const size_t size = file.size();
  KILN_CHECK(size >= 4, "{}: too short for a llama2.c tokenizer ({} bytes)", path, size);
  int32_t max_len = 0;
  std::memcpy(&max_len, p, 4);
  KILN_CHECK(max_len > 0 && max_len < (1 << 20), "{}: max_token_length {} is not plausible", path, max_len);
  size_t off = 4;
  std::vector<std::string> tokens;
  std::vector<float> scores;
  while (off < size) {
    KILN_CHECK(size - off >= 8, "{}: token {} is truncated at byte {}", path, tokens.size(), off);
    float score;
    int32_t len;
    std::memcpy(&score, p + off, 4);
    std::memcpy(&len, p + off + 4, 4);
    off += 8;
    KILN_CHECK(len >= 0 && len <= max_len && static_cast<size_t>(len) <= size - off,
               "{}: token {} has length {} (max_token_length {}, {} bytes left)", path, tokens.size(), len, max_len,
               size - off);
    tokens.emplace_back(reinterpret_cast<const char*>(p + off), static_cast<size_t>(len));
    scores.push_back(score);
    off += static_cast<size_t>(len);
  }
  KILN_CHECK(tokens.size() >= 3, "{}: only {} tokens (need at least <unk>, BOS, EOS)", path, tokens.size());

  Vocab vocab(tokens);
  int32_t byte_ids[256];
  find_byte_tokens(vocab, byte_ids);
  std::vector<bool> mergeable(tokens.size(), true);
  mergeable[0] = mergeable[1] = mergeable[2] = false;
  for (int b = 0; b < 256; ++b) {
    if (byte_ids[b] >= 0) mergeable[byte_ids[b]] = false;
  }

  TokenizerParts parts;
  parts.model = std::make_unique<SpmModel>(std::move(vocab), std::move(scores), std::move(mergeable), 0);
  parts.normalizer = std::make_unique<PrependNormalizer>(" ");  // SentencePiece's dummy prefix
  std::vector<std::unique_ptr<Decoder>> decs;
  decs.push_back(std::make_unique<ByteFallbackDecoder>());
  decs.push_back(std::make_unique<FuseDecoder>());
  decs.push_back(std::make_unique<StripDecoder>(U' ', 1, 0));
  parts.decoder = std::make_unique<SequenceDecoder>(std::move(decs));
  parts.post_processor = std::make_unique<TemplatePostProcessor>(std::vector<int32_t>{1}, std::vector<int32_t>{});
  parts.extra_special_ids = {0, 1, 2};
  parts.bos_id = 1;
  parts.eos_ids = {2};
  return std::make_unique<PipelineTokenizer>(std::move(parts));
}

}  // namespace kiln::tok
