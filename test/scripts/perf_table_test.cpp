// scripts/perf_table.py, the table of scripts/gpu-check.sh perf (issue 33
// item 5), on hand-made inputs: each row's MFU is clinic's FLOPs per update
// over the row's time per update against clinic's GEMM peak of that
// precision (recomputed here), the target ratios are ratios of the rows'
// tokens/s, a run that printed nothing is a failed row, and perf.json
// holds what the table shows.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test/support.h"

namespace clinic {
namespace {

namespace fs = std::filesystem;

void put(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

TEST(PerfTable, MfuAndTargetRatiosAreComputedFromTheRows) {
  test::TempDir d;
  fs::path dir = d.file("perf");
  fs::create_directories(dir);
  put(d.file("machine.txt"), "name, driver_version, memory.total [MiB], clocks.max.sm [MHz]\n"
                             "NVIDIA H100 80GB HBM3, 550.1, 81559 MiB, 1980 MHz\n");
  // clinic: 2e12 FLOPs per update, 400 TFLOP/s peak, 40 ms per update.
  put(dir / "clinic-4096-bf16.json",
      R"({"tokens_per_s": 204800, "updates_per_s": 25, "ms_per_update": 40.0,)"
      R"( "flops_per_update": 2e12, "gemm_peak_gflops": 400000, "device_peak_memory_mb": 3000,)"
      R"( "loss_curve": [[1, 9.2], [100, 7.5]]})" "\n");
  put(dir / "clinic_device-4096-bf16.json",
      R"({"tokens_per_s": 819200, "updates_per_s": 100, "ms_per_update": 10.0,)"
      R"( "flops_per_update": 2e12, "gemm_peak_gflops": 400000, "device_peak_memory_mb": 3100,)"
      R"( "loss_curve": [[1, 9.2], [100, 7.4]]})" "\n");
  put(dir / "clinic_graph-4096-bf16.json",
      R"({"tokens_per_s": 1024000, "updates_per_s": 125, "ms_per_update": 8.0,)"
      R"( "flops_per_update": 2e12, "gemm_peak_gflops": 400000, "device_peak_memory_mb": 3300,)"
      R"( "loss_curve": [[1, 9.2], [100, 7.4]]})" "\n");
  put(dir / "torch_eager-4096-bf16.json",
      R"({"tokens_per_s": 327680, "ms_per_update": 25.0, "peak_memory_mb": 4000,)"
      R"( "loss_curve": [[1, 9.3], [100, 7.6]]})" "\n");
  put(dir / "torch_compile-4096-bf16.json", "");  // timed out: printed nothing
  put(dir / "curve-clinic_device.json", R"({"loss_curve": [[1, 6.0], [150, 4.0], [300, 2.0]]})");
  put(dir / "curve-clinic_graph.json", R"({"loss_curve": [[1, 6.0], [150, 4.09], [300, 2.0]]})");
  put(dir / "curve-torch_eager.json", R"({"loss_curve": [[1, 6.0], [150, 4.04], [300, 2.01]]})");
  std::string out;
  ASSERT_EQ(test::run_shell("/usr/bin/python3 " + std::string(kSourceDir) + "/scripts/perf_table.py " +
                                dir.string() + " " + d.file("machine.txt"),
                            &out),
            0)
      << out;
  EXPECT_NE(out.find("device: NVIDIA H100 80GB HBM3"), std::string::npos) << out;
  // MFU = 2e12 / 0.040 s / 1e9 / 400000 GFLOP/s = 12.50 %; 10 ms: 50.00 %;
  // torch_eager at 25 ms on clinic's FLOPs: 20.00 %.
  EXPECT_NE(out.find("12.50%"), std::string::npos) << out;
  EXPECT_NE(out.find("50.00%"), std::string::npos) << out;
  EXPECT_NE(out.find("20.00%"), std::string::npos) << out;
  EXPECT_NE(out.find("torch_compile              failed or timed out"), std::string::npos) << out;
  // 819200 / 204800 = 4.000 (met at >= 4); / 327680 = 2.500 (met).
  EXPECT_NE(out.find("clinic_device / clinic (today): 4.000 (target >= 4.0) met"), std::string::npos) << out;
  EXPECT_NE(out.find("clinic_device / torch_eager: 2.500 (target >= 2.0) met"), std::string::npos) << out;
  EXPECT_NE(out.find("clinic_device / torch_compile: n/a"), std::string::npos) << out;
  // clinic_graph at 8 ms: 62.50 %; 1024000 / 204800 = 5.000, / 327680 = 3.125.
  EXPECT_NE(out.find("62.50%"), std::string::npos) << out;
  EXPECT_NE(out.find("clinic_graph / clinic (today): 5.000 (target >= 4.0) met"), std::string::npos) << out;
  EXPECT_NE(out.find("clinic_graph / torch_eager: 3.125 (target >= 2.0) met"), std::string::npos) << out;
  // Curves: the largest |a - b| / b is 0.04 / 4.04 = 0.0099 (met at <= 0.01)
  // for clinic_device, 0.05 / 4.04 = 0.0124 (not met) for clinic_graph.
  EXPECT_NE(out.find("clinic_device 6.000 -> 2.000, torch_eager 6.000 -> 2.010; largest relative "
                     "difference 0.0099 (target <= 0.01: met"), std::string::npos) << out;
  EXPECT_NE(out.find("clinic_graph 6.000 -> 2.000, torch_eager 6.000 -> 2.010; largest relative "
                     "difference 0.0124 (target <= 0.01: NOT met"), std::string::npos) << out;
  nlohmann::json j = nlohmann::json::parse(read_file(d.file("perf.json")));
  EXPECT_EQ(j["device"], "NVIDIA H100 80GB HBM3");
  ASSERT_EQ(j["rows"].size(), 5u);
  EXPECT_NEAR(j["curve_max_rel_diff"].get<double>(), 0.05 / 4.04, 1e-9);
  for (const auto& r : j["rows"])
    if (r["system"] == "clinic_device") {
      EXPECT_NEAR(r["mfu"].get<double>(), 0.5, 1e-12);
    }
}

}  // namespace
}  // namespace clinic
