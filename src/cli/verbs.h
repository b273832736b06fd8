// The kiln verbs: each registers its flags on a CLI11 subcommand and runs when chosen.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace kiln::cli {

// Each returns the function that runs the verb once its flags are parsed (returns the exit code).
std::function<int()> add_generate(CLI::App& app);
std::function<int()> add_chat(CLI::App& app);
std::function<int()> add_info(CLI::App& app);
std::function<int()> add_bench(CLI::App& app);
std::function<int()> add_serve(CLI::App& app);

}  // namespace kiln::cli
