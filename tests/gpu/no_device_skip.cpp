// Compiled into every test binary of a CUDA build: without a visible CUDA device, a gpu-labelled run (a
// tests/gpu binary, or a CPU test binary run with KILN_TEST_DEVICE=cuda) prints why and exits 77, which ctest
// reports as skipped (SKIP_RETURN_CODE in tests/CMakeLists.txt) instead of one failure per test.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/cuda/cuda_ops.h"

namespace {

constexpr int kSkipReturnCode = 77;

class NoDeviceSkip : public ::testing::Environment {
 public:
  void SetUp() override {
#ifndef KILN_GPU_TEST
    const char* device = std::getenv("KILN_TEST_DEVICE");
    if (device == nullptr || std::string(device) != "cuda") return;
#endif
    if (kiln::cuda::device_count() > 0) return;
    std::printf("kiln: no CUDA device is visible (no GPU, or no driver); the gpu tests are skipped\n");
    std::fflush(stdout);
    std::_Exit(kSkipReturnCode);  // before any test runs: nothing to tear down
  }
};

[[maybe_unused]] const ::testing::Environment* const kNoDeviceSkip =
    ::testing::AddGlobalTestEnvironment(new NoDeviceSkip);

}  // namespace
