// A program that uses kiln as an installed library: loads a model (an HF folder, a .gguf or a llama2.c .bin), runs a
// prompt greedily through the in-flight-batching executor and prints the text. Built against `cmake --install`.
//   generate MODEL [PROMPT] [--device cuda]
#include <kiln/executor.h>
#include <kiln/model.h>

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL [PROMPT] [--device cuda]\n", argv[0]);
    return 2;
  }
  const std::string model = argv[1];
  std::string prompt = "The capital of France is";
  kiln::LoadOptions load;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      load.device = std::string(argv[++i]) == "cuda" ? kiln::Device::CUDA : kiln::Device::CPU;
    } else {
      prompt = argv[i];
    }
  }
  try {
    kiln::LLM llm(model, load);
    kiln::Request params;
    params.sampling.temperature = 0.0f;  // greedy: the same text every run
    params.max_tokens = 16;
    const kiln::LLM::Output out = llm.generate({prompt}, params)[0];
    std::printf("%s%s\n", prompt.c_str(), out.text.c_str());
    std::fprintf(stderr, "%zu tokens, finish reason %s\n", out.token_ids.size(),
                 kiln::finish_reason_name(out.finish_reason));
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 2;
  }
  return 0;
}
