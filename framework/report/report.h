#pragma once
// clinic diagnose: report.md, report.html (PNGs inlined, opens with no
// server) and PNG plots drawn by gnuplot (pngcairo) from the runs' files.
#include <string>
#include <vector>

#include "framework/report/diagnosis.h"
#include "framework/report/run_data.h"

namespace clinic {

/// Writes OUT_DIR/{report.md, report.html, *.png, plots/*.gp} for `runs`
/// (several runs are overlaid). Returns the report's text diagnosis (the
/// findings of every run) for the terminal.
std::string write_diagnose_report(const std::vector<RunData>& runs, const std::string& out_dir,
                                  const DiagnoseThresholds& t = {});

/// Runs gnuplot on `script` (which must write to `png`): the script is saved
/// as `gp_path`, the picture goes to png.tmp first and is renamed when
/// gnuplot succeeded. DataError with gnuplot's message otherwise (or when
/// gnuplot is not installed).
void render_gnuplot(const std::string& gp_path, const std::string& script, const std::string& png);

/// RFC 4648 base64 (for the inlined PNGs).
std::string base64(const std::string& bytes);

}  // namespace clinic
