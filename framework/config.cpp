#include "framework/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "clinic_paths.h"
#include "framework/errors.h"
#include "framework/optim/name_pattern.h"

namespace fs = std::filesystem;

namespace clinic {
namespace config_detail {

std::string where(const std::string& file, const YAML::Node& node) {
  // Command-line values (--set k=v, --beam 0) have no line of their own.
  if (file.rfind("--", 0) == 0) return file;
  if (!node.Mark().is_null())
    return fmt::format("{}:{}", file, node.Mark().line + 1);
  return file;
}

std::string scalar_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}

// Parse one YAML node into a typed field; `ctx` prefixes error messages.
void parse_value(const YAML::Node& n, bool& out, const std::string& ctx) {
  try {
    if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
    out = n.as<bool>();
  } catch (const YAML::BadConversion&) {
    throw ConfigError(fmt::format("{}: expected true or false, got '{}'", ctx,
                                  scalar_text(n)));
  }
}
void parse_value(const YAML::Node& n, int64_t& out, const std::string& ctx) {
  try {
    if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
    out = n.as<int64_t>();
  } catch (const YAML::BadConversion&) {
    throw ConfigError(fmt::format("{}: expected an integer, got '{}'", ctx,
                                  scalar_text(n)));
  }
}
void parse_value(const YAML::Node& n, double& out, const std::string& ctx) {
  try {
    if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
    out = n.as<double>();
  } catch (const YAML::BadConversion&) {
    throw ConfigError(fmt::format("{}: expected a number, got '{}'", ctx,
                                  scalar_text(n)));
  }
}
void parse_value(const YAML::Node& n, std::string& out,
                 const std::string& ctx) {
  if (!n.IsScalar())
    throw ConfigError(fmt::format("{}: expected a string, got {}", ctx,
                                  scalar_text(n)));
  out = n.Scalar();
}
void parse_value(const YAML::Node& n, std::vector<double>& out,
                 const std::string& ctx) {
  if (!n.IsSequence())
    throw ConfigError(fmt::format("{}: expected a list of numbers like "
                                  "[0.9, 0.98], got '{}'",
                                  ctx, scalar_text(n)));
  std::vector<double> v;
  for (const auto& e : n) {
    double d = 0;
    parse_value(e, d, ctx);
    v.push_back(d);
  }
  out = std::move(v);
}

const char* type_name(const bool&) { return "bool"; }
const char* type_name(const int64_t&) { return "int"; }
const char* type_name(const double&) { return "float"; }
const char* type_name(const std::string&) { return "string"; }
const char* type_name(const std::vector<double>&) { return "list[float]"; }
const char* type_name(const std::vector<OptimGroupConfig>&) { return "list[group]"; }

std::string format_double(double d) {
  std::string s = fmt::format("{}", d);
  // Keep YAML typing stable: "1" would read back as an int for a float key.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}
std::string yaml_text(const bool& b) { return b ? "true" : "false"; }
std::string yaml_text(const int64_t& i) { return std::to_string(i); }
std::string yaml_text(const double& d) { return format_double(d); }
std::string yaml_text(const std::string& s) {
  YAML::Emitter e;
  e << YAML::DoubleQuoted << s;
  return e.c_str();
}
std::string yaml_text(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? ", " : "") + format_double(v[i]);
  return s + "]";
}

// Writes a struct's fields as the pairs of a YAML flow mapping.
struct FlowWriter {
  std::vector<std::string>& parts;
  template <class T>
  void operator()(const char* key, T& field, const char*, const Rule&) {
    parts.push_back(std::string(key) + ": " + yaml_text(field));
  }
};

// optim.groups as one YAML flow sequence (recipe.yaml, checkpoints, `clinic
// config`); only the keys a group sets.
std::string yaml_text(const std::vector<OptimGroupConfig>& groups) {
  std::vector<std::string> items;
  for (auto g : groups) {
    std::vector<std::string> parts = {"name: " + yaml_text(g.name)};
    if (!g.match.empty()) parts.push_back("match: " + yaml_text(g.match));
    if (!g.glob.empty()) parts.push_back("glob: " + yaml_text(g.glob));
    if (g.lr) parts.push_back("lr: " + yaml_text(*g.lr));
    if (g.betas) parts.push_back("betas: " + yaml_text(*g.betas));
    if (g.eps) parts.push_back("eps: " + yaml_text(*g.eps));
    if (g.weight_decay) parts.push_back("weight_decay: " + yaml_text(*g.weight_decay));
    if (g.schedule) {
      std::vector<std::string> sp;
      FlowWriter w{sp};
      g.schedule->visit(w);
      parts.push_back(fmt::format("schedule: {{{}}}", fmt::join(sp, ", ")));
    }
    items.push_back(fmt::format("{{{}}}", fmt::join(parts, ", ")));
  }
  return fmt::format("[{}]", fmt::join(items, ", "));
}

void parse_groups(const YAML::Node& n, std::vector<OptimGroupConfig>& out,
                  const std::string& file, const std::string& path,
                  std::map<std::string, std::string>& origin);

// Collects field names of one section.
struct NameCollector {
  std::vector<std::string> names;
  template <class T>
  void operator()(const char* key, T&, const char*, const Rule&) {
    names.emplace_back(key);
  }
};

// Reads one YAML section map into a config struct.
struct SectionReader {
  const YAML::Node& node;
  const std::string& file;
  const std::string& section;
  std::map<std::string, std::string>& origin;
  template <class T>
  void operator()(const char* key, T& field, const char*, const Rule&) {
    YAML::Node n = node[key];
    if (!n) return;
    std::string path = section + "." + key;
    if constexpr (std::is_same_v<T, std::vector<OptimGroupConfig>>)
      parse_groups(n, field, file, path, origin);
    else
      parse_value(n, field, fmt::format("{}: {}", where(file, n), path));
    origin[path] = where(file, n);
  }
};

struct SectionWriter {
  std::ostringstream& out;
  template <class T>
  void operator()(const char* key, T& field, const char* help, const Rule&) {
    out << "  " << key << ": " << yaml_text(field) << "  # " << help << "\n";
  }
};

std::string allowed_text(const Rule& r) {
  if (!r.choices.empty()) {
    std::string s = "one of";
    for (const auto& c : r.choices) s += " " + c;
    return s;
  }
  if (r.lo && r.hi) return fmt::format("in [{}, {}]", *r.lo, *r.hi);
  if (r.lo) return fmt::format("{} {}", r.lo_open ? ">" : ">=", *r.lo);
  return "";
}

struct SectionValidator {
  const std::string& section;
  const std::map<std::string, std::string>& origin;
  std::string loc(const std::string& path) const {
    auto it = origin.find(path);
    return it == origin.end() ? std::string("default") : it->second;
  }
  void check_number(const char* key, double v, const Rule& r) const {
    bool ok = true;
    if (r.lo) ok = ok && (r.lo_open ? v > *r.lo : v >= *r.lo);
    if (r.hi) ok = ok && v <= *r.hi;
    if (!std::isfinite(v)) ok = false;
    if (!ok) {
      std::string path = section + "." + key;
      throw ConfigError(fmt::format("{}: {} = {}: must be {}", loc(path),
                                    path, v, allowed_text(r)));
    }
  }
  void operator()(const char* key, int64_t& f, const char*, const Rule& r) {
    check_number(key, static_cast<double>(f), r);
  }
  void operator()(const char* key, double& f, const char*, const Rule& r) {
    check_number(key, f, r);
  }
  void operator()(const char* key, std::string& f, const char*,
                  const Rule& r) {
    if (r.choices.empty()) return;
    if (std::find(r.choices.begin(), r.choices.end(), f) != r.choices.end())
      return;
    std::string path = section + "." + key;
    std::string hint = closest_match(f, r.choices);
    throw ConfigError(fmt::format(
        "{}: {} = '{}': must be {}{}", loc(path), path, f, allowed_text(r),
        hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
  }
  template <class T>
  void operator()(const char*, T&, const char*, const Rule&) {}
};

struct Describer {
  std::ostringstream& out;
  const std::string& section;
  template <class T>
  void operator()(const char* key, T& field, const char* help,
                  const Rule& r) {
    out << "| `" << section << "." << key << "` | " << type_name(field)
        << " | `" << yaml_text(field) << "` | " << allowed_text(r) << " | "
        << help << " |\n";
  }
};

// Dispatches section visitors by name.
template <class Fn>
struct SectionDispatch {
  Fn fn;
  template <class S>
  void section(const char* name, S& s) {
    fn(name, s);
  }
};
template <class Fn>
void for_each_section(RunConfig& cfg, Fn fn) {
  SectionDispatch<Fn> d{fn};
  cfg.visit_sections(d);
}

std::vector<std::string> section_names() {
  RunConfig cfg;
  std::vector<std::string> names;
  for_each_section(cfg, [&](const char* n, auto&) { names.emplace_back(n); });
  return names;
}

// yaml-cpp keeps every pair of a mapping and node[key] returns the first,
// so `lr: 0.1` then `lr: 0.2` silently meant 0.1. A repeated key is an error
// naming both lines.
void reject_duplicate_keys(const YAML::Node& map, const std::string& file,
                           const std::string& prefix) {
  std::map<std::string, YAML::Node> seen;
  for (const auto& kv : map) {
    std::string key = kv.first.Scalar();
    auto [it, fresh] = seen.emplace(key, kv.first);
    if (!fresh)
      throw ConfigError(fmt::format("{}: duplicate key '{}{}' (first given at line {})",
                                    where(file, kv.first), prefix, key,
                                    it->second.Mark().line + 1));
  }
}

// Every key of `map` must be one of `names`; else an error naming the file,
// line and key, with the closest name.
void reject_unknown_keys(const YAML::Node& map, const std::vector<std::string>& names,
                         const std::string& file, const std::string& prefix) {
  for (const auto& kv : map) {
    std::string key = kv.first.as<std::string>();
    if (std::find(names.begin(), names.end(), key) != names.end()) continue;
    std::string hint = closest_match(key, names);
    throw ConfigError(fmt::format("{}: unknown key '{}{}'{}", where(file, kv.first), prefix, key,
                                  hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint)));
  }
}

void parse_groups(const YAML::Node& n, std::vector<OptimGroupConfig>& out,
                  const std::string& file, const std::string& path,
                  std::map<std::string, std::string>& origin) {
  if (!n.IsSequence())
    throw ConfigError(fmt::format(
        "{}: {}: expected a list of groups like [{{name: encoder, match: 'encoder.*', lr: "
        "0.002}}], got {}",
        where(file, n), path, n.IsScalar() ? "'" + n.Scalar() + "'" : scalar_text(n)));
  std::vector<OptimGroupConfig> groups;
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node e = n[i];
    const std::string p = fmt::format("{}[{}]", path, i);
    if (!e.IsMap())
      throw ConfigError(fmt::format("{}: {}: a group is a mapping {{name: ..., match: ..., ...}}, "
                                    "got {}",
                                    where(file, e), p, scalar_text(e)));
    reject_duplicate_keys(e, file, p + ".");
    reject_unknown_keys(e, {"name", "match", "glob", "lr", "betas", "eps", "weight_decay",
                            "schedule"},
                        file, p + ".");
    OptimGroupConfig g;
    auto read = [&](const char* key, auto& field) {
      if (!e[key]) return false;
      parse_value(e[key], field, fmt::format("{}: {}.{}", where(file, e[key]), p, key));
      origin[p + "." + key] = where(file, e[key]);
      return true;
    };
    auto read_opt = [&](const char* key, auto& opt) {
      typename std::decay_t<decltype(opt)>::value_type v{};
      if (read(key, v)) opt = v;
    };
    read("name", g.name);
    read("match", g.match);
    read("glob", g.glob);
    read_opt("lr", g.lr);
    read_opt("betas", g.betas);
    read_opt("eps", g.eps);
    read_opt("weight_decay", g.weight_decay);
    origin[p] = where(file, e);
    g.where = origin[p];
    if (const YAML::Node sn = e["schedule"]) {
      if (!sn.IsMap())
        throw ConfigError(fmt::format("{}: {}.schedule must be a mapping like {{name: noam, "
                                      "warmup_updates: 10000}}",
                                      where(file, sn), p));
      ScheduleConfig sc;
      NameCollector names;
      sc.visit(names);
      reject_duplicate_keys(sn, file, p + ".schedule.");
      reject_unknown_keys(sn, names.names, file, p + ".schedule.");
      std::string sec = p + ".schedule";
      SectionReader reader{sn, file, sec, origin};
      sc.visit(reader);
      g.schedule = sc;
    }
    groups.push_back(std::move(g));
  }
  out = std::move(groups);
}

// yaml-cpp recurses once per nesting level: 100k '[' overflowed into a
// "bad file" parse error. Recipes nest 3 levels; refuse anything past 32
// before the parser sees it, naming the line.
void check_nesting(const std::string& text, const std::string& label) {
  constexpr int kMaxDepth = 32;
  int depth = 0;
  size_t line = 1;
  char quote = 0;
  bool comment = false;
  for (char ch : text) {
    if (ch == '\n') {
      ++line;
      comment = false;
      if (quote == '\'') quote = 0;  // a single-quoted scalar cannot span lines here
      continue;
    }
    if (comment) continue;
    if (quote) {
      if (ch == quote) quote = 0;
      continue;
    }
    if (ch == '#') comment = true;
    else if (ch == '"' || ch == '\'') quote = ch;
    else if (ch == '[' || ch == '{') {
      if (++depth > kMaxDepth)
        throw ConfigError(fmt::format("{}:{}: YAML nested deeper than {} levels", label,
                                      line, kMaxDepth));
    } else if ((ch == ']' || ch == '}') && depth > 0) {
      --depth;
    }
  }
}

YAML::Node parse_yaml(const std::string& text, const std::string& label) {
  check_nesting(text, label);
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}:{}: YAML syntax error: {}", label, e.mark.line + 1, e.msg));
  }
}

void apply_section_map(RunConfig& cfg, const YAML::Node& root,
                       const std::string& file) {
  if (!root.IsMap())
    throw ConfigError(fmt::format(
        "{}: a recipe must be a mapping of sections (model, data, ...)",
        where(file, root)));
  std::vector<std::string> top = section_names();
  top.insert(top.end(), {"base", "description"});
  reject_duplicate_keys(root, file, "");
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    if (std::find(top.begin(), top.end(), key) == top.end()) {
      std::string hint = closest_match(key, top);
      throw ConfigError(fmt::format(
          "{}: unknown section '{}'{}; sections are: {}", where(file, kv.first), key,
          hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint),
          fmt::join(section_names(), ", ")));
    }
  }
  if (root["description"])
    parse_value(root["description"], cfg.description,
                where(file, root["description"]) + ": description");
  for_each_section(cfg, [&](const char* name, auto& section) {
    YAML::Node n = root[name];
    if (!n) return;
    if (n.IsNull()) return;
    if (!n.IsMap())
      throw ConfigError(fmt::format("{}: section '{}' must be a mapping",
                                    where(file, n), name));
    NameCollector names;
    section.visit(names);
    reject_duplicate_keys(n, file, std::string(name) + ".");
    for (const auto& kv : n) {
      std::string key = kv.first.as<std::string>();
      if (std::find(names.names.begin(), names.names.end(), key) ==
          names.names.end()) {
        std::string hint = closest_match(key, names.names);
        throw ConfigError(fmt::format(
            "{}: unknown key '{}.{}'{}", where(file, kv.first), name, key,
            hint.empty() ? ""
                         : fmt::format(" (did you mean '{}'?)", hint)));
      }
    }
    std::string sec(name);
    SectionReader reader{n, file, sec, cfg.origin};
    section.visit(reader);
  });
}

YAML::Node load_yaml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (!in || !(text << in.rdbuf()))
    throw ConfigError(fmt::format("{}: cannot read recipe file", path));
  return parse_yaml(text.str(), path);
}

std::string find_recipe_file(const std::string& name_or_path,
                             const std::string& relative_to) {
  std::vector<fs::path> tries;
  fs::path p(name_or_path);
  if (!relative_to.empty() && p.is_relative())
    tries.push_back(fs::path(relative_to) / p);
  tries.push_back(p);
  fs::path by_name = fs::path(recipes_dir()) / name_or_path;
  if (by_name.extension() != ".yaml") by_name += ".yaml";
  tries.push_back(by_name);
  for (const auto& t : tries)
    if (fs::is_regular_file(t)) return t.lexically_normal().string();
  std::string hint = closest_match(name_or_path, list_recipes());
  throw ConfigError(fmt::format(
      "recipe '{}' not found (looked for {} and {}){}", name_or_path,
      p.string(), by_name.string(),
      hint.empty() ? "; `clinic recipes` lists them"
                   : fmt::format("; did you mean '{}'?", hint)));
}

void apply_recipe_file(RunConfig& cfg, const std::string& path,
                       std::vector<std::string>& chain) {
  std::string canon = fs::weakly_canonical(path).string();
  if (std::find(chain.begin(), chain.end(), canon) != chain.end()) {
    std::string cycle;
    for (const auto& c : chain) cycle += c + " -> ";
    throw ConfigError("recipe inheritance cycle: " + cycle + canon);
  }
  chain.push_back(canon);
  YAML::Node root = load_yaml_file(path);
  if (root.IsMap() && root["base"]) {
    std::string base;
    parse_value(root["base"], base, where(path, root["base"]) + ": base");
    std::string base_file;
    try {
      base_file =
          find_recipe_file(base, fs::path(path).parent_path().string());
    } catch (const ConfigError& e) {
      throw ConfigError(where(path, root["base"]) + ": base: " + e.what());
    }
    apply_recipe_file(cfg, base_file, chain);
  }
  apply_section_map(cfg, root, path);
  chain.pop_back();
}

}  // namespace config_detail

using namespace config_detail;

std::string closest_match(const std::string& word,
                          const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    std::vector<size_t> prev(c.size() + 1), cur(c.size() + 1);
    for (size_t j = 0; j <= c.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      cur[0] = i;
      for (size_t j = 1; j <= c.size(); ++j)
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1,
                           prev[j - 1] + (word[i - 1] != c[j - 1] ? 1 : 0)});
      std::swap(prev, cur);
    }
    if (prev[c.size()] < best_d) {
      best_d = prev[c.size()];
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, word.size() / 3);
  if (best_d <= limit) return best;
  // A longer or shorter spelling of a known name ("optimizer" for "optim").
  for (const auto& c : candidates)
    if (c.size() >= 3 && word.size() >= 3 &&
        (word.rfind(c, 0) == 0 || c.rfind(word, 0) == 0))
      return c;
  return std::string();
}

std::string recipes_dir() {
  if (const char* env = std::getenv("CLINIC_RECIPES"); env && *env) return env;
  if (fs::is_directory("recipes")) return "recipes";
  return std::string(kClinicSourceDir) + "/recipes";
}

std::string project_root() {
  fs::path r = fs::absolute(recipes_dir()).lexically_normal();
  if (r.filename().empty()) r = r.parent_path();
  return r.parent_path().string();
}

std::string resolve_data_path(const std::string& path) {
  fs::path p(path);
  if (p.is_absolute() || fs::exists(p)) return p.string();
  fs::path alt = fs::path(project_root()) / p;
  if (fs::exists(alt)) return alt.string();
  return p.string();
}

std::vector<std::string> list_recipes() {
  std::vector<std::string> out;
  fs::path root(recipes_dir());
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || e.path().extension() != ".yaml") continue;
    fs::path rel = fs::relative(e.path(), root);
    rel.replace_extension();
    out.push_back(rel.generic_string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void apply_override(RunConfig& cfg, const std::string& assignment, const std::string& flag) {
  std::string label = flag.empty() ? "--set " + assignment : flag;
  auto eq = assignment.find('=');
  auto dot = assignment.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot > eq)
    throw ConfigError(fmt::format(
        "{}: expected section.key=value, e.g. --set optim.lr=5e-4", label));
  std::string sec = assignment.substr(0, dot);
  std::string key = assignment.substr(dot + 1, eq - dot - 1);
  std::string value = assignment.substr(eq + 1);
  YAML::Node v;
  try {
    v = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: cannot parse value: {}", label, e.msg));
  }
  if (value.empty()) v = YAML::Node(std::string());
  YAML::Node root(YAML::NodeType::Map);
  root[sec][key] = v;
  apply_section_map(cfg, root, label);
}

void validate(const RunConfig& c) {
  RunConfig& cfg = const_cast<RunConfig&>(c);  // visitors take T&; read only
  for_each_section(cfg, [&](const char* name, auto& section) {
    std::string sec(name);
    SectionValidator v{sec, cfg.origin};
    section.visit(v);
  });
  auto loc = [&](const std::string& k) {
    auto it = cfg.origin.find(k);
    return it == cfg.origin.end() ? std::string("default") : it->second;
  };
  const auto& m = cfg.model;
  if (m.d_model % m.heads != 0)
    throw ConfigError(fmt::format(
        "{}: model.heads = {} must divide model.d_model = {}",
        loc("model.heads"), m.heads, m.d_model));
  const auto& b = cfg.optim.betas;
  if (b.size() != 2 || b[0] < 0 || b[0] >= 1 || b[1] < 0 || b[1] >= 1)
    throw ConfigError(fmt::format(
        "{}: optim.betas must be two numbers in [0, 1), got {}",
        loc("optim.betas"), yaml_text(b)));
  std::set<std::string> group_names;
  for (size_t i = 0; i < cfg.optim.groups.size(); ++i) {
    const auto& g = cfg.optim.groups[i];
    const std::string p = fmt::format("optim.groups[{}]", i);
    auto gloc = [&](const std::string& k) {
      std::string l = loc(p + "." + k);
      return l == "default" ? loc(p) : l;
    };
    static const std::regex kIdent("[A-Za-z0-9_]+");
    if (!std::regex_match(g.name, kIdent))
      throw ConfigError(fmt::format("{}: {}.name = '{}': a group needs a name of letters, digits "
                                    "and _ (its lr is logged as lr_<name>)",
                                    gloc("name"), p, g.name));
    if (!group_names.insert(g.name).second)
      throw ConfigError(fmt::format("{}: {}.name = '{}': an earlier group has this name",
                                    gloc("name"), p, g.name));
    if (g.match.empty() == g.glob.empty())
      throw ConfigError(fmt::format("{}: {} ('{}'): give exactly one of match (a regex over the "
                                    "whole parameter name) and glob",
                                    loc(p), p, g.name));
    if (!g.match.empty()) {
      try {
        NamePattern re(g.match);
      } catch (const ConfigError& e) {
        throw ConfigError(fmt::format("{}: {}.match = '{}': {}", gloc("match"), p, g.match,
                                      e.what()));
      }
    }
    auto positive_or = [&](const char* key, const std::optional<double>& v, bool zero_ok) {
      if (v && !(std::isfinite(*v) && (zero_ok ? *v >= 0 : *v > 0)))
        throw ConfigError(fmt::format("{}: {}.{} = {}: must be {} 0", gloc(key), p, key, *v,
                                      zero_ok ? ">=" : ">"));
    };
    positive_or("lr", g.lr, true);  // lr 0 freezes the group (e.g. one LayerNorm's bias)
    positive_or("eps", g.eps, false);
    positive_or("weight_decay", g.weight_decay, true);
    if (g.betas) {
      const auto& gb = *g.betas;
      if (gb.size() != 2 || gb[0] < 0 || gb[0] >= 1 || gb[1] < 0 || gb[1] >= 1)
        throw ConfigError(fmt::format("{}: {}.betas must be two numbers in [0, 1), got {}",
                                      gloc("betas"), p, yaml_text(gb)));
    }
    if (g.schedule) {
      ScheduleConfig sc = *g.schedule;
      SectionValidator v{p + ".schedule", cfg.origin};
      sc.visit(v);
      if ((sc.name == "linear" || sc.name == "cosine") && sc.total_updates == 0 &&
          cfg.train.max_updates == 0)
        throw ConfigError(fmt::format("{}: {}.schedule.name = {} decays over total_updates or "
                                      "train.max_updates; set one of them",
                                      gloc("schedule"), p, sc.name));
    }
  }
  if (m.share_all_embeddings && !cfg.data.joint_vocab)
    throw ConfigError(fmt::format(
        "{}: model.share_all_embeddings needs data.joint_vocab: true",
        loc("model.share_all_embeddings")));
  if (cfg.data.source == "fixed_batch" && (cfg.data.fixed_input.empty() || cfg.data.fixed_target.empty()))
    throw ConfigError(fmt::format("{}: data.source = fixed_batch needs data.fixed_input and "
                                  "data.fixed_target (e.g. \"1 0; 0 1\")",
                                  loc("data.source")));
  if (cfg.data.source == "fixed_batch" && cfg.train.eval_bleu)
    throw ConfigError(fmt::format("{}: train.eval_bleu needs a corpus (data.source = fixed_batch "
                                  "has no text to translate)",
                                  loc("train.eval_bleu")));
  if (cfg.eval.nbest > cfg.eval.beam)
    throw ConfigError(fmt::format("{}: eval.nbest = {} exceeds eval.beam = {}: a beam of "
                                  "k holds at most k hypotheses",
                                  loc("eval.nbest"), cfg.eval.nbest, cfg.eval.beam));
  if (cfg.schedule.name != "constant" && cfg.schedule.name != "inverse_sqrt" &&
      cfg.schedule.total_updates == 0 && cfg.train.max_updates == 0 &&
      (cfg.schedule.name == "linear" || cfg.schedule.name == "cosine"))
    throw ConfigError(fmt::format(
        "{}: schedule.name = {} decays over schedule.total_updates or "
        "train.max_updates; set one of them",
        loc("schedule.name"), cfg.schedule.name));
}

RunConfig parse_recipe_text(const std::string& yaml, const std::string& label,
                            const std::vector<std::string>& overrides) {
  RunConfig cfg;
  YAML::Node root = parse_yaml(yaml, label);
  if (root.IsMap() && root["base"])
    throw ConfigError(label + ": base: is only supported in recipe files");
  if (!root.IsNull()) apply_section_map(cfg, root, label);
  for (const auto& o : overrides) apply_override(cfg, o);
  validate(cfg);
  return cfg;
}

RunConfig load_recipe(const std::string& name_or_path,
                      const std::vector<std::string>& overrides) {
  RunConfig cfg;
  std::string file = find_recipe_file(name_or_path, "");
  std::vector<std::string> chain;
  apply_recipe_file(cfg, file, chain);
  cfg.source = file;
  for (const auto& o : overrides) apply_override(cfg, o);
  validate(cfg);
  return cfg;
}

std::string to_yaml(const RunConfig& c) {
  RunConfig& cfg = const_cast<RunConfig&>(c);
  std::ostringstream out;
  if (!cfg.description.empty())
    out << "description: " << yaml_text(cfg.description) << "\n";
  for_each_section(cfg, [&](const char* name, auto& section) {
    out << name << ":\n";
    SectionWriter w{out};
    section.visit(w);
  });
  return out.str();
}

namespace {
// (section.key, YAML text) of every field, in declaration order.
struct FieldTexts {
  std::string section;
  std::vector<std::pair<std::string, std::string>>& out;
  template <class T>
  void operator()(const char* key, T& field, const char*, const Rule&) {
    out.emplace_back(section + "." + key, yaml_text(field));
  }
};
std::vector<std::pair<std::string, std::string>> field_texts(const RunConfig& c) {
  RunConfig& cfg = const_cast<RunConfig&>(c);  // visitors take T&; read only
  std::vector<std::pair<std::string, std::string>> out;
  for_each_section(cfg, [&](const char* name, auto& section) {
    FieldTexts f{name, out};
    section.visit(f);
  });
  return out;
}
}  // namespace

std::vector<ConfigDifference> config_differences(const RunConfig& a, const RunConfig& b) {
  auto fa = field_texts(a), fb = field_texts(b);
  std::vector<ConfigDifference> out;
  for (size_t i = 0; i < fa.size(); ++i)
    if (fa[i].second != fb[i].second) out.push_back({fa[i].first, fa[i].second, fb[i].second});
  return out;
}

std::string describe_keys() {
  RunConfig cfg;
  std::ostringstream out;
  out << "| key | type | default | allowed | meaning |\n"
      << "|---|---|---|---|---|\n";
  for_each_section(cfg, [&](const char* name, auto& section) {
    std::string sec(name);
    Describer d{out, sec};
    section.visit(d);
  });
  return out.str();
}

}  // namespace clinic
