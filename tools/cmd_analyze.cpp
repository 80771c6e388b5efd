// clinic analyze RECIPE [--set ...] --depths 6,12,18 --variants post_ln,pre_ln,admin
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>

#include "framework/data/text.h"
#include "framework/diagnostics/analysis.h"
#include "framework/errors.h"
#include "framework/report/report.h"
#include "tools/command.h"

namespace clinic::cli {

void add_analyze_command(CLI::App& app, Action& action) {
  static std::string recipe, out;
  static std::vector<std::string> overrides;
  static AnalyzeOptions o;
  auto* a = app.add_subcommand(
      "analyze", "output change, gradient norms and dependency vs depth (Liu et al. 2020, Fig. 4)");
  a->add_option("recipe", recipe, "recipe name or path (its data and model width)")->required();
  add_overrides(a, &overrides);
  a->add_option("--depths", o.depths, "layers per stack, e.g. 6,12,18")
      ->delimiter(',')
      ->check(CLI::Range(1, 1000));
  a->add_option("--variants", o.variants, "residual variants, e.g. post_ln,pre_ln,admin")
      ->delimiter(',');
  a->add_option("--seeds", o.seeds, "seeds per setting (mean reported)")->check(CLI::Range(1, 100));
  a->add_option("--updates", o.updates, "train this many updates before measuring (0 = at init)")
      ->check(CLI::Range(0, 1000000));
  a->add_option("--out", out, "output directory (default runs/analyze-<recipe>)");
  a->callback([&action] {
    action = [] {
      RunConfig cfg = recipe_from_cli(recipe, overrides);
      for (const auto& v : o.variants) {
        RunConfig c = cfg;
        c.model.residual = v;
        c.origin["model.residual"] = "--variants";  // the error names the flag, not the recipe
        check_registered_names(c);
      }
      // A repeated setting would be measured twice and fit against itself
      // (x and x: a zero-width fit, nan R2).
      auto refuse_repeats = [](const char* flag, auto values) {
        std::sort(values.begin(), values.end());
        auto it = std::adjacent_find(values.begin(), values.end());
        if (it != values.end())
          throw ConfigError(fmt::format("{}: {} is given twice; list each once", flag, *it));
      };
      refuse_repeats("--depths", o.depths);
      refuse_repeats("--variants", o.variants);
      std::string dir = out;
      if (dir.empty()) {
        // runs/analyze-multi30k-base for recipe multi30k/base
        dir = "runs/analyze-" + std::filesystem::path(recipe).replace_extension().string();
        std::replace(dir.begin() + 5, dir.end(), '/', '-');
      }
      std::filesystem::create_directories(dir);
      o.work_dir = dir + "/work";
      auto rows = run_analysis(cfg, o);
      // Means over seeds per (variant, depth).
      std::map<std::string, std::map<int64_t, std::vector<AnalyzeRow>>> by;
      for (const auto& r : rows) by[r.variant][r.depth].push_back(r);
      auto mean = [](const std::vector<AnalyzeRow>& v, double AnalyzeRow::*f) {
        double m = 0;
        for (const auto& r : v) m += r.*f / v.size();
        return m;
      };
      std::ostringstream tsv, table;
      tsv << "variant\tdepth\tseeds\tchange_random_enc\tchange_random_dec\tchange_update_enc\t"
             "change_update_dec\tgrad_first_over_last_enc\tgrad_first_over_last_dec\t"
             "dependency_enc\tdependency_dec\n";
      table << fmt::format("{:<10} {:>5} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>7} {:>7}\n",
                           "variant", "N", "rand enc", "rand dec", "upd enc", "upd dec",
                           "g1/gN enc", "g1/gN dec", "dep enc", "dep dec");
      for (const auto& [variant, depths] : by)
        for (const auto& [depth, v] : depths) {
          double ge = mean(v, &AnalyzeRow::grad_first_enc) / mean(v, &AnalyzeRow::grad_last_enc);
          double gd = mean(v, &AnalyzeRow::grad_first_dec) / mean(v, &AnalyzeRow::grad_last_dec);
          tsv << fmt::format("{}\t{}\t{}\t{:.6g}\t{:.6g}\t{:.6g}\t{:.6g}\t{:.6g}\t{:.6g}\t{:.4f}\t{:.4f}\n",
                             variant, depth, v.size(), mean(v, &AnalyzeRow::change_random_enc),
                             mean(v, &AnalyzeRow::change_random_dec),
                             mean(v, &AnalyzeRow::change_update_enc),
                             mean(v, &AnalyzeRow::change_update_dec), ge, gd,
                             mean(v, &AnalyzeRow::dependency_enc),
                             mean(v, &AnalyzeRow::dependency_dec));
          table << fmt::format("{:<10} {:>5} {:>12.4g} {:>12.4g} {:>12.4g} {:>12.4g} {:>10.3g} "
                               "{:>10.3g} {:>7.3f} {:>7.3f}\n",
                               variant, depth, mean(v, &AnalyzeRow::change_random_enc),
                               mean(v, &AnalyzeRow::change_random_dec),
                               mean(v, &AnalyzeRow::change_update_enc),
                               mean(v, &AnalyzeRow::change_update_dec), ge, gd,
                               mean(v, &AnalyzeRow::dependency_enc),
                               mean(v, &AnalyzeRow::dependency_dec));
        }
      // Growth of the decoder output change with the number of sublayers.
      std::ostringstream fits;
      fits << "\ngrowth of the output change with depth (y = a + b N vs y = a + b ln N; "
              "and the power law y ~ N^alpha, whose alpha is 1 for O(N) and that of c ln N "
              "over these depths for O(log N)):\n";
      if (o.depths.size() < 2) {
        fits << "  (a growth fit needs two depths or more; --depths has "
             << o.depths.size() << ")\n";
      } else {
        for (const auto& [variant, depths] : by)
          for (auto [name, field] : {std::pair{"random enc", &AnalyzeRow::change_random_enc},
                                     std::pair{"random dec", &AnalyzeRow::change_random_dec},
                                     std::pair{"update enc", &AnalyzeRow::change_update_enc},
                                     std::pair{"update dec", &AnalyzeRow::change_update_dec}}) {
            std::vector<double> x, y;
            for (const auto& [depth, v] : depths) {
              x.push_back(static_cast<double>(depth));
              y.push_back(mean(v, field));
            }
            GrowthFit f = fit_growth(x, y);
            fits << fmt::format("  {:<10} {:<10}: R2 linear {:.3f}, R2 log {:.3f} -> {}; x{:.2f} from "
                                "N = {} to {} (N ratio {:.1f}, ln N ratio {:.2f}); y ~ N^{:.2f} -> "
                                "{} (O(N): 1, O(log N): {:.2f})\n",
                                variant, name, f.r2_linear, f.r2_log, f.better(), f.growth,
                                x.front(), x.back(), x.back() / x.front(),
                                std::log(x.back()) / std::log(x.front()), f.exponent,
                                f.nearer_exponent(), f.exponent_of_log);
          }
      }
      write_file_atomic(dir + "/analysis.tsv", tsv.str());
      // Plot: output change vs depth per variant.
      std::ostringstream gp;
      gp << "# tall\nset multiplot layout 2,2 title 'output change vs depth (" << recipe << ")'\n"
         << "set grid\nset key top left\nset xlabel 'layers per stack N'\n"
         << "set ylabel '|F(W) - F(W*)|^2 per token'\n";
      for (int col : {4, 5, 6, 7}) {
        gp << "set title '" << (col <= 5 ? "random perturbation, " : "gradient update, ")
           << (col % 2 == 0 ? "encoder output" : "decoder output") << "'\nplot ";
        size_t k = 0;
        for (const auto& [variant, depths] : by)
          gp << (k++ ? ", " : "") << "'-' using 1:2 with linespoints lw 2 pt 7 title '" << variant << "'";
        gp << "\n";
        for (const auto& [variant, depths] : by) {
          for (const auto& [depth, v] : depths)
            gp << depth << " "
               << mean(v, col == 4   ? &AnalyzeRow::change_random_enc
                          : col == 5 ? &AnalyzeRow::change_random_dec
                          : col == 6 ? &AnalyzeRow::change_update_enc
                                     : &AnalyzeRow::change_update_dec)
               << "\n";
          gp << "e\n";
        }
      }
      gp << "unset multiplot\n";
      render_gnuplot(dir + "/output_change_vs_depth.gp", gp.str(), dir + "/output_change_vs_depth.png");
      write_file_atomic(dir + "/analysis.txt", table.str() + fits.str());
      std::cout << table.str() << fits.str() << "written: " << dir << "/analysis.tsv, "
                << dir << "/analysis.txt, " << dir << "/output_change_vs_depth.png\n";
    };
  });
}

}  // namespace clinic::cli
