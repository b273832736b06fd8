// kiln: the command-line entry point; each verb lives in its own file.
#include <cstdio>
#include <exception>
#include <string>

#include "cli/verbs.h"
#include "kiln/error.h"

int main(int argc, char** argv) {
  CLI::App app{"kiln: run large language models fast"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kiln 0.1.0");
  struct Verb {
    CLI::App* sub;
    std::function<int()> run;
  };
  std::vector<Verb> verbs;
  auto add = [&](const char* name, const char* help, auto adder) {
    CLI::App* sub = app.add_subcommand(name, help);
    verbs.push_back({sub, adder(*sub)});
  };
  add("generate", "Generate a continuation of a prompt", kiln::cli::add_generate);
  add("chat", "Chat interactively with an instruct model", kiln::cli::add_chat);
  add("info", "Describe a model: architecture, parameters, dtypes, memory", kiln::cli::add_info);
  add("bench", "Measure throughput and latency (request/s, tok/s, TTFT, TPOT)", kiln::cli::add_bench);
  add("serve", "Serve a model over an OpenAI-compatible HTTP API", kiln::cli::add_serve);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n') c = ' ';
    std::fprintf(stderr, "kiln: %s (see kiln --help)\n", msg.c_str());
    return 2;
  }
  try {
    for (const auto& v : verbs)
      if (v.sub->parsed()) return v.run();
  } catch (const kiln::Error& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kiln: out of memory\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: internal error: %s\n", e.what());
    return 3;
  }
  return 2;
}
