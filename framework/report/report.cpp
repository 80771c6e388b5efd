#include "framework/report/report.h"

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "framework/data/subprocess.h"
#include "framework/data/text.h"
#include "framework/errors.h"
#include "framework/train/run_dir.h"

namespace fs = std::filesystem;

namespace clinic {

std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<unsigned char>(in[i]) << 16) |
                 (static_cast<unsigned char>(in[i + 1]) << 8) | static_cast<unsigned char>(in[i + 2]);
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += t[(v >> 6) & 63];
    out += t[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += t[v >> 18];
    out += t[(v >> 12) & 63];
    out += i + 1 < in.size() ? t[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

namespace {
// gnuplot on $PATH ($CLINIC_GNUPLOT overrides), or "" (the child is started
// with execv, which does not search PATH).
std::string gnuplot_path() {
  if (const char* env = std::getenv("CLINIC_GNUPLOT"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    fs::path p = fs::path(d.empty() ? "." : d) / "gnuplot";
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}
}  // namespace

void render_gnuplot(const std::string& gp_path, const std::string& script, const std::string& png) {
  write_file_atomic(gp_path, script);
  // NAME.tmp.PID, as AtomicFileWriter names its temporaries: a diagnose
  // killed while gnuplot draws leaves one that the next diagnose removes.
  const std::string pid = std::to_string(::getpid());
  const std::string tmp = png + ".tmp." + pid, run_script = gp_path + ".run.tmp." + pid;
  // noenhanced: run names and keys hold '_' (no subscripts).
  std::string full = fmt::format("set terminal pngcairo noenhanced size 1200,{} font 'sans,10'\n"
                                 "set output '{}'\n",
                                 script.find("# tall") != std::string::npos ? 900 : 600, tmp) +
                     script + "\nunset output\n";
  write_file_atomic(run_script, full);
  CommandResult r;
  std::string gnuplot = gnuplot_path();
  if (gnuplot.empty()) r.exit_code = 127;
  else r = run_command({gnuplot, run_script});
  fs::remove(run_script);
  if (r.exit_code != 0) {
    std::error_code ec;
    fs::remove(tmp, ec);
    // gnuplot echoes the script line, a caret, then "line N: what"; keep the last.
    std::string err;
    std::istringstream lines(r.err);
    for (std::string l; std::getline(lines, l);)
      if (l.find_first_not_of(" \t^") != std::string::npos) err = l.substr(l.find_first_not_of(" \t"));
    throw DataError(r.exit_code == 127
                        ? "gnuplot not found: clinic diagnose draws its plots with gnuplot "
                          "(apt-get install gnuplot-nox)"
                        : fmt::format("{}: gnuplot failed: {}", gp_path, err));
  }
  fs::rename(tmp, png);
}

namespace {


std::string num(double v) { return std::isfinite(v) ? fmt::format("{:.6g}", v) : "NaN"; }
std::string pos(double v) { return std::isfinite(v) && v > 0 ? fmt::format("{:.6g}", v) : "NaN"; }
int64_t upd(const nlohmann::json& j) { return static_cast<int64_t>(json_num(j, "update")); }

std::string quote(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '"' ? '\'' : c;
  return "\"" + o + "\"";
}

struct Figure {
  std::string file, caption;
};

class Plots {
 public:
  Plots(const std::vector<RunData>& runs, const std::string& dir) : runs_(runs), dir_(dir) {
    fs::create_directories(dir_ + "/plots");
  }
  std::vector<Figure> figures;

  void draw(const std::string& name, const std::string& script, const std::string& caption) {
    render_gnuplot(dir_ + "/plots/" + name + ".gp", script, dir_ + "/" + name + ".png");
    figures.push_back({name + ".png", caption});
  }

  void curves() {
    std::ostringstream s;
    s << "# tall\nset multiplot layout 2,2 title 'training curves'\nset key top right\n"
         "set grid\n";
    for (size_t k = 0; k < runs_.size(); ++k) {
      const auto& r = runs_[k];
      s << "$train" << k << " << EOD\n";
      for (const auto& p : r.train)
        s << upd(p) << " " << num(json_num(p, "loss")) << " " << num(json_num(p, "lr")) << " "
          << pos(json_num(p, "grad_norm")) << " " << pos(json_num(p, "loss_scale")) << "\n";
      s << "EOD\n$valid" << k << " << EOD\n";
      for (const auto& p : r.valid) s << upd(p) << " " << num(json_num(p, "valid_loss")) << "\n";
      s << "EOD\n$spike" << k << " << EOD\n";
      for (const auto& p : r.spikes) s << upd(p) << " " << num(json_num(p, "loss")) << "\n";
      for (const auto& p : r.nonfinite) s << upd(p) << " NaN\n";
      s << "EOD\n";
    }
    // A panel whose series has no plottable value in any run (a run whose
    // every logged gradient norm is NaN, an old or hand-made metrics file
    // without the field) is drawn empty and says so: gnuplot refuses to
    // plot it, and a report must still come out.
    auto plottable = [&](const char* field, bool positive) {
      for (const auto& r : runs_)
        for (const auto& p : r.train) {
          double v = json_num(p, field);
          if (std::isfinite(v) && (!positive || v > 0)) return true;
        }
      return false;
    };
    const char* fields[] = {"", "", "loss", "lr", "grad_norm", "loss_scale"};
    auto panel = [&](const std::string& title, const std::string& ylabel, int col, bool logy,
                     bool extras) {
      if (!plottable(fields[col], col >= 4)) {
        s << "set title '" << title << " (no finite values logged)'\nunset logscale y\n"
          << "set xrange [0:1]\nset yrange [0:1]\nplot 2 notitle\nset autoscale x\n"
          << "set autoscale y\n";
        return;
      }
      s << "set title '" << title << "'\nset xlabel 'update'\nset ylabel '" << ylabel << "'\n"
        << (logy ? "set logscale y\n" : "unset logscale y\n") << "plot ";
      for (size_t k = 0; k < runs_.size(); ++k) {
        s << (k ? ", " : "") << "$train" << k << " using 1:" << col << " with lines lw 2 lc "
          << k + 1 << " title " << quote(runs_[k].label);
        if (extras) {
          s << ", $valid" << k << " using 1:2 with linespoints dt 2 lc " << k + 1
            << " title 'valid'";
          s << ", $spike" << k << " using 1:2 with points pt 7 ps 1.2 lc " << k + 1
            << " title 'spikes'";
        }
      }
      s << "\n";
    };
    panel("loss (bits/token; dots: spikes)", "loss", 2, false, true);
    panel("learning rate", "lr", 3, false, false);
    panel("gradient norm", "grad norm", 4, true, false);
    panel("loss scale", "scale", 5, true, false);
    s << "unset multiplot\n";
    draw("curves", s.str(),
         "Training loss with validation (dashed) and loss spikes (dots); learning rate; "
         "gradient norm; loss scale.");
  }

  // One heatmap panel per run: update x sublayer of a per-sublayer field.
  /// cbrange "[0:1]" (one colour scale for every run) or "[*:*]".
  void heatmap(const std::string& stack, const std::string& field, const std::string& title,
               const std::string& caption, const std::string& cbrange = "[*:*]") {
    // One panel per run that has this stack (an encoder-only model has no
    // decoder): its data block and row count, from one pass over its records.
    const std::string key = stack + "_" + field;
    std::vector<std::string> panels;
    for (size_t k = 0; k < runs_.size(); ++k) {
      std::ostringstream data;
      size_t rows = 0;
      for (const auto& d : runs_[k].diag) {
        auto v = json_nums(d, key);
        rows = std::max(rows, v.size());
        for (size_t i = 0; i < v.size(); ++i) data << upd(d) << " " << i + 1 << " " << num(v[i]) << "\n";
        data << "\n";
      }
      if (rows == 0) continue;
      // Sublayers are whole numbers: ticks at 1, 1 + step, ... (about 12 at most).
      panels.push_back(fmt::format("$h{0} << EOD\n{1}EOD\nset ytics 1,{2}\nset yrange "
                                         "[0.5:{3}]\nset title {4}\nplot $h{0} using 1:2:3 with "
                                         "image notitle\n",
                                         k, data.str(), (rows + 11) / 12, rows + 0.5,
                                         quote(runs_[k].label)));
    }
    if (panels.empty()) return;  // no panel at all: no figure
    std::ostringstream s;
    s << "# tall\nset multiplot layout " << panels.size() << ",1 title '" << title << " (" << stack
      << ")'\nset xlabel 'update'\nset ylabel 'sublayer'\nset palette rgb 33,13,10\n"
         "set cbrange " << cbrange << "\n";
    for (const auto& p : panels) s << p;
    s << "unset multiplot\n";
    draw(field + "_" + stack, s.str(), caption);
  }

  void output_change() {
    std::ostringstream s;
    s << "set multiplot layout 1,2 title 'output change of the stack output'\nset logscale y\n"
         "set grid\nset xlabel 'update'\nset key below\nset format y '%g'\n";
    // Which (run, stack) has a point the log axis can show, per column: an
    // encoder-only model has no decoder, a model with no layer no change.
    std::map<std::pair<size_t, std::string>, std::array<bool, 2>> shown;
    for (size_t k = 0; k < runs_.size(); ++k)
      for (const char* stack : kStacks) {
        s << "$c" << k << stack << " << EOD\n";
        auto& has = shown[{k, stack}];
        has = {false, false};
        for (const auto& d : runs_[k].diag) {
          auto u = json_nums(d, std::string(stack) + "_output_change_update");
          auto r = json_nums(d, std::string(stack) + "_output_change_random");
          std::string pu = pos(u.empty() ? NAN : u.back()), pr = pos(r.empty() ? NAN : r.back());
          has[0] = has[0] || pu != "NaN";
          has[1] = has[1] || pr != "NaN";
          s << upd(d) << " " << pu << " " << pr << "\n";
        }
        s << "EOD\n";
      }
    bool any_panel = false;
    for (int col : {2, 3}) {
      s << "set title '" << (col == 2 ? "W -> W + update" : "W -> W + random delta")
        << "'\nset ylabel '|F(W) - F(W*)|^2 per token'\n";
      std::string clauses;
      for (size_t k = 0; k < runs_.size(); ++k)
        for (const char* stack : kStacks) {
          if (!shown[{k, stack}][col - 2]) continue;
          clauses += fmt::format("{}$c{}{} using 1:{} with linespoints lw 2 lc {} dt {} title {}",
                                 clauses.empty() ? "" : ", ", k, stack, col, k + 1,
                                 stack[0] == 'e' ? 1 : 2, quote(runs_[k].label + " " + stack));
        }
      if (clauses.empty())  // gnuplot refuses a plot with no defined point
        s << "set xrange [0:1]\nset yrange [1:10]\nset label 1 'no positive finite values' at "
             "graph 0.3,0.5\nplot 1/0 notitle\nunset label 1\nset autoscale\n";
      else
        s << "plot " << clauses << "\n";
      any_panel = any_panel || !clauses.empty();
    }
    s << "unset multiplot\n";
    if (!any_panel) return;
    draw("output_change", s.str(),
         "Output change of the encoder (solid) and decoder (dashed) output under one real "
         "update and under a random perturbation of fixed relative size (Liu et al. 2020, "
         "Fig. 4).");
  }

  // The source-swap probe: the probe tokens' loss with their own sources
  // and with each source swapped for another sentence's; where the two
  // lines meet, the decoder takes nothing from the encoder.
  void source_use() {
    std::ostringstream s;
    s << "set title 'probe loss with own vs swapped sources'\nset grid\nset xlabel 'update'\n"
         "set ylabel 'bits per target token'\nset key top right\n";
    std::string clauses;
    for (size_t k = 0; k < runs_.size(); ++k) {
      std::ostringstream rows;
      for (const auto& d : runs_[k].diag) {
        double own = json_num(d, "probe_nll"), swapped = json_num(d, "probe_nll_rotated_source");
        if (std::isfinite(own) && std::isfinite(swapped))
          rows << upd(d) << " " << num(own) << " " << num(swapped) << "\n";
      }
      if (rows.str().empty()) continue;
      s << "$s" << k << " << EOD\n" << rows.str() << "EOD\n";
      for (int col : {2, 3})
        clauses += fmt::format("{}$s{} using 1:{} with linespoints lw 2 lc {} dt {} title {}",
                               clauses.empty() ? "" : ", ", k, col, k + 1, col == 2 ? 1 : 2,
                               quote(runs_[k].label + (col == 2 ? " own" : " swapped")));
    }
    if (clauses.empty()) return;  // no encoder-decoder run measured it
    s << "plot " << clauses << "\n";
    draw("source_use", s.str(),
         "The probe sentences' loss with their own sources (solid) and with each source swapped "
         "for another probe sentence's (dashed). A model that translates pays for the swap; "
         "where the lines meet, its decoder is a target-side language model (rule "
         "source_ignored).");
  }

  // Values per layer (or sublayer) at each run's last diag record.
  void per_layer(const std::string& name, const std::vector<std::string>& fields,
                 const std::vector<std::string>& titles, bool logy, const std::string& caption) {
    std::ostringstream s;
    s << "set multiplot layout 1," << fields.size() << "\nset grid\nset key below\nset format y '%g'\n"
      << (logy ? "set logscale y\n" : "");
    bool any = false;
    for (size_t f = 0; f < fields.size(); ++f) {
      // One series per run and stack: the plot clauses, then their inline data.
      std::string clauses, data;
      for (size_t k = 0; k < runs_.size(); ++k) {
        for (const char* stack : kStacks) {
          // The run's last measurement of this stack with points the axis can
          // show (an encoder-only model has no decoder; a log axis no zeros).
          auto showable = [&](const std::vector<double>& v) {
            return std::any_of(v.begin(), v.end(),
                               [&](double x) { return std::isfinite(x) && (!logy || x > 0); });
          };
          const nlohmann::json* last = nullptr;
          std::vector<double> v;
          for (auto it = runs_[k].diag.rbegin(); it != runs_[k].diag.rend() && !last; ++it) {
            v = json_nums(*it, std::string(stack) + "_" + fields[f]);
            if (showable(v)) last = &*it;
          }
          if (!last) continue;
          const auto& d = *last;
          clauses += fmt::format("{}'-' using 1:2 with linespoints lw 2 lc {} dt {} title {}",
                                 clauses.empty() ? "" : ", ", k + 1, stack[0] == 'e' ? 1 : 2,
                                 quote(runs_[k].label + " " + stack + " @" + std::to_string(upd(d))));
          for (size_t i = 0; i < v.size(); ++i)
            data += fmt::format("{} {}\n", i + 1, logy ? pos(v[i]) : num(v[i]));
          data += "e\n";
        }
      }
      any = any || !clauses.empty();
      s << "set title '" << titles[f] << "'\nset xlabel 'layer'\n"
        << (clauses.empty() ? "unset logscale y\nset yrange [0:1]\nplot 1/0 notitle\nset autoscale y\n"
                            : "plot " + clauses + "\n" + data)
        << (clauses.empty() && logy ? "set logscale y\n" : "");
    }
    s << "unset multiplot\n";
    if (any) draw(name, s.str(), caption);
  }

  // The paper's Fig. 5: histograms of relative gradient / update norms.
  void fig5() {
    std::ostringstream s;
    int panels = 0;
    for (const auto& r : runs_) panels += r.diag.empty() ? 0 : 1;
    if (!panels) return;
    s << "# tall\nset multiplot layout " << panels << ",2 title 'relative norms of the layer "
         "weight matrices (each / largest, log10)'\nset style fill solid 0.5\n"
         "set boxwidth 0.45\nset key top left\nset xrange [-6.5:0.5]\nset xlabel 'log10(norm / largest)'\n"
         "set ylabel 'tensors'\n";
    for (size_t k = 0; k < runs_.size(); ++k) {
      const auto& r = runs_[k];
      if (r.diag.empty()) continue;
      for (const char* field : {"grad_norm_rel", "update_norm_rel"}) {
        s << "set title " << quote(r.label + ": " + field) << "\nplot ";
        std::vector<const nlohmann::json*> at = {&r.diag.front(), &r.diag.back()};
        for (size_t a = 0; a < at.size(); ++a)
          s << (a ? ", " : "") << "'-' using 1:2 with boxes lc " << a + 1 << " title 'update "
            << upd(*at[a]) << "'";
        s << "\n";
        for (const auto* d : at) {
          // Weight matrices of the layers (not embeddings, biases, norms, omega),
          // in half-decade bins; everything below 1e-6 in the first.
          auto names = json_strings(*d, "param_name");
          auto vals = json_nums(*d, field);
          std::vector<double> kept;
          for (size_t i = 0; i < vals.size() && i < names.size(); ++i) {
            const auto& n = names[i];
            bool weight = n.find("_layers.") != std::string::npos &&
                          n.size() > 6 && n.compare(n.size() - 6, 6, "weight") == 0 &&
                          n.find("norm.") == std::string::npos;
            if (weight && std::isfinite(vals[i])) kept.push_back(vals[i]);
          }
          double mx = 0;
          for (double v : kept) mx = std::max(mx, v);
          std::vector<int> bins(13, 0);
          for (double v : kept) {
            double l = mx > 0 && v > 0 ? std::log10(v / mx) : -6.5;
            bins[std::clamp(static_cast<int>(std::floor((l + 6.5) / 0.5)), 0, 12)] += 1;
          }
          for (int b = 0; b < 13; ++b) s << -6.25 + 0.5 * b << " " << bins[b] << "\n";
          s << "e\n";
        }
      }
    }
    s << "unset multiplot\n";
    draw("fig5_relative_norms", s.str(),
         "Histograms of gradient and update norms of the layers' weight matrices relative to the "
         "largest among them (log10), at the first and last measurement (Liu et al. 2020, Fig. 5: "
         "Post-LN's are spread over decades, Admin's concentrated).");
  }

 private:
  const std::vector<RunData>& runs_;
  std::string dir_;
};

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

}  // namespace

namespace {

// report.md and report.html end with a stamp of their own text, so a re-run
// can tell a report clinic wrote (replaced) from one the user edited or that
// has no stamp (kept beside the new one, never lost).
constexpr const char* kStamp = "<!-- clinic diagnose fnv1a64 ";

std::string stamped(const std::string& text) {
  return text + fmt::format("{}{:016x} -->\n", kStamp, hash_bytes(text));
}

bool written_by_clinic(const std::string& text) {
  size_t at = text.rfind(kStamp);
  if (at == std::string::npos) return false;
  return stamped(text.substr(0, at)) == text;
}

// Writes `text` (stamped) to `path` atomically. An existing file clinic did
// not write as it stands is first kept as PATH.~N~ (the first free N); the
// returned line says so ("" otherwise).
std::string write_report_file(const std::string& path, const std::string& text) {
  std::string note;
  if (fs::exists(path) && !written_by_clinic(read_file(path))) {
    std::string kept;
    for (int n = 1;; ++n) {
      kept = fmt::format("{}.~{}~", path, n);
      if (!fs::exists(kept)) break;
    }
    // A hard link keeps the old contents under the new name; the atomic
    // write below then replaces only the old name.
    std::error_code ec;
    fs::create_hard_link(path, kept, ec);
    if (ec) fs::copy_file(path, kept);
    note = fmt::format("{} had changes clinic did not write: kept as {}\n", path, kept);
  }
  write_file_atomic(path, stamped(text));
  return note;
}

}  // namespace

std::string write_diagnose_report(const std::vector<RunData>& runs, const std::string& out_dir,
                                  const DiagnoseThresholds& t) {
  if (fs::exists(out_dir) && !fs::is_directory(out_dir))
    throw DataError(fmt::format("{}: exists and is not a directory; the report needs a directory "
                                "(the file is left as it is)",
                                out_dir));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec)
    throw DataError(fmt::format("{}: cannot create the report directory: {}", out_dir,
                                ec.message()));
  // A diagnose killed mid-report (SIGTERM, SIGKILL) replaced nothing (every
  // file is written whole, then renamed) but left its temporaries: remove them.
  remove_stale_temporaries(out_dir);
  remove_stale_temporaries(out_dir + "/plots");
  Plots plots(runs, out_dir);
  plots.curves();
  for (const char* stack : kStacks) {
    plots.heatmap(stack, "dependency", "layer dependency beta_ii",
                  fmt::format("Dependency of each {} sublayer on its own residual branch over "
                              "training (beta_ii; Post-LN near 1 in deep layers, Pre-LN ~ 1/sqrt(i)).",
                              stack),
                  "[0:1]");
    plots.heatmap(stack, "branch_ratio", "branch / shortcut RMS",
                  fmt::format("RMS of each {} sublayer's branch output over its (omega-scaled) "
                              "shortcut.",
                              stack));
  }
  plots.output_change();
  plots.source_use();
  plots.per_layer("layer_norms", {"layer_grad_norm", "layer_update_norm"},
                  {"gradient norm per layer", "update norm per layer"}, true,
                  "Per-layer gradient and update norms at each run's last measurement "
                  "(encoder solid, decoder dashed).");
  plots.fig5();
  for (const char* stack : kStacks) {
    // Mean attention entropy over heads, as an extra per-sublayer field.
    std::vector<RunData> with_entropy = runs;
    for (auto& r : with_entropy)
      for (auto& d : r.diag) {
        auto ent = json_nums2(d, std::string(stack) + "_attn_entropy");
        std::vector<double> mean;
        for (const auto& h : ent) {
          double m = 0;
          for (double e : h) m += e / h.size();
          mean.push_back(m);
        }
        d[std::string(stack) + "_attn_entropy_mean"] = mean;
      }
    Plots p(with_entropy, out_dir);
    p.heatmap(stack, "attn_entropy_mean", "attention entropy (nats, mean over heads)",
              fmt::format("Mean attention entropy of each {} attention sublayer over training; "
                          "a collapse onto one key shows as entropy near 0.",
                          stack));
    plots.figures.insert(plots.figures.end(), p.figures.begin(), p.figures.end());
  }
  plots.per_layer("omega", {"omega"}, {"shortcut weight omega per sublayer"}, false,
                  "Mean shortcut weight omega of every sublayer at the last measurement (1 for "
                  "Post-LN / Pre-LN; Admin's profiled values).");

  std::ostringstream md, html, terminal;
  md << "# clinic diagnose\n\n";
  html << "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>clinic diagnose</title>"
          "<style>body{font-family:sans-serif;max-width:1250px;margin:auto}img{max-width:100%}"
          ".fired{color:#a00}</style></head><body>\n<h1>clinic diagnose</h1>\n";
  for (const auto& r : runs) {
    auto findings = diagnose(r, t);
    md << "## " << r.label << "\n\n`" << r.dir << "`: " << r.train.size() << " training records, "
       << r.valid.size() << " validations, " << r.diag.size() << " measurements, "
       << r.spikes.size() << " spikes, " << r.nonfinite.size() << " non-finite updates"
       << (r.resumes > 0
               ? fmt::format("; resumed {} time{} (the updates logged twice are the resumed "
                             "session's; a record averaging fewer updates sets no minimum)",
                             r.resumes, r.resumes == 1 ? "" : "s")
               : std::string())
       << ".\n\n";
    html << "<h2>" << html_escape(r.label) << "</h2>\n<p><code>" << html_escape(r.dir)
         << "</code></p>\n";
    terminal << r.label << ":\n";
    if (!r.data_problems.empty()) {
      md << "### Data problems\n\n";
      html << "<h3>Data problems</h3>\n<ul>\n";
      for (const auto& p : r.data_problems) {
        md << "- `" << p << "`\n";
        html << "<li><code>" << html_escape(p) << "</code></li>\n";
      }
      md << "\nThe diagnosis below reads the other records.\n\n";
      html << "</ul>\n<p>The diagnosis below reads the other records.</p>\n";
    }
    md << "### Diagnosis\n\n";
    html << "<h3>Diagnosis</h3>\n<ul>\n";
    bool any = false;
    for (const auto& f : findings) {
      if (!f.fired) continue;
      any = true;
      md << "- **" << f.rule << "**: " << f.summary << "."
         << (f.cure.empty() ? "" : " *Try*: " + f.cure + ".") << "\n";
      html << "<li class=\"fired\"><b>" << f.rule << "</b>: " << html_escape(f.summary) << "."
           << (f.cure.empty() ? "" : " <i>Try</i>: " + html_escape(f.cure) + ".") << "</li>\n";
      terminal << "  [" << f.rule << "] " << f.summary << "."
               << (f.cure.empty() ? "" : " Try: " + f.cure + ".") << "\n";
    }
    if (!any) {
      md << "- nothing fired.\n";
      html << "<li>nothing fired.</li>\n";
      terminal << "  nothing fired\n";
    }
    md << "\n### Checked, nothing found\n\n";
    html << "</ul>\n<h3>Checked, nothing found</h3>\n<ul>\n";
    for (const auto& f : findings) {
      if (f.fired) continue;
      md << "- " << f.checked << "\n";
      html << "<li>" << html_escape(f.checked) << "</li>\n";
    }
    md << "\n";
    html << "</ul>\n";
    if (!r.init_summary.empty()) {
      md << "Initialisation: " << r.init_summary << "\n\n";
      html << "<p>Initialisation: " << html_escape(r.init_summary) << "</p>\n";
    }
  }
  md << "## Plots\n\n";
  html << "<h2>Plots</h2>\n";
  for (const auto& f : plots.figures) {
    md << "![" << f.file << "](" << f.file << ")\n\n" << f.caption << "\n\n";
    html << "<figure><img alt=\"" << f.file << "\" src=\"data:image/png;base64,"
         << base64(read_file(out_dir + "/" + f.file)) << "\"><figcaption>"
         << html_escape(f.caption) << "</figcaption></figure>\n";
  }
  html << "</body></html>\n";
  terminal << write_report_file(out_dir + "/report.md", md.str());
  terminal << write_report_file(out_dir + "/report.html", html.str());
  return terminal.str();
}

}  // namespace clinic
