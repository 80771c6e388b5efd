#include <gtest/gtest.h>
#include <torch/torch.h>

#include "framework/logging.h"
#include "framework/registry.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  clinic::register_builtins();
  clinic::log()->set_level(spdlog::level::warn);
  torch::set_num_threads(1);  // ctest runs tests in parallel
  return RUN_ALL_TESTS();
}
