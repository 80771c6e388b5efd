#pragma once
// Typed recipe configuration. Every field is declared exactly once, in the
// struct's visit() method, with its YAML key, a one-line comment and its
// allowed values; readers, writers, --set overrides, validation and the
// recipes/README.md table are all driven from that single declaration.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace clinic {

/// Allowed values of one field. Numbers: [lo, hi]; strings: one of choices.
struct Rule {
  std::optional<double> lo, hi;
  bool lo_open = false;
  std::vector<std::string> choices;
};
inline Rule at_least(double lo) { return Rule{lo, std::nullopt, false, {}}; }
inline Rule positive() { return Rule{0.0, std::nullopt, true, {}}; }
inline Rule in_range(double lo, double hi) { return Rule{lo, hi, false, {}}; }
inline Rule one_of(std::vector<std::string> c) {
  return Rule{std::nullopt, std::nullopt, false, std::move(c)};
}
inline Rule any() { return Rule{}; }

struct ModelConfig {
  std::string arch = "transformer";
  std::string residual = "post_ln";
  std::string encoder_residual;  // empty: model.residual
  std::string decoder_residual;  // empty: model.residual
  std::string encoder_variant() const { return encoder_residual.empty() ? residual : encoder_residual; }
  std::string decoder_variant() const { return decoder_residual.empty() ? residual : decoder_residual; }
  /// "admin", or "enc post_ln / dec pre_ln" for a mix (Liu et al. 2020, Table 1).
  std::string residual_label() const {
    return encoder_variant() == decoder_variant()
               ? encoder_variant()
               : "enc " + encoder_variant() + " / dec " + decoder_variant();
  }
  int64_t encoder_layers = 6;
  int64_t decoder_layers = 6;
  int64_t d_model = 512;
  int64_t ffn_dim = 1024;
  int64_t heads = 4;
  std::string activation = "relu";
  double dropout = 0.3;
  double attention_dropout = 0.1;
  double activation_dropout = 0.1;
  bool share_decoder_input_output_embed = true;
  bool share_all_embeddings = false;
  int64_t max_source_positions = 1024;
  bool checkpoint_activations = false;
  int64_t max_target_positions = 1024;
  std::string omega_shape = "vector";
  bool omega_trainable = true;
  std::string omega_scale = "O(logn)";
  double layer_norm_eps = 1e-5;

  template <class V>
  void visit(V& v) {
    v("arch", arch, "registered model family", any());
    v("residual", residual,
      "residual variant: post_ln, pre_ln, admin, admin_closed_form, "
      "deepnorm, rezero, or a user-registered name",
      any());
    v("encoder_residual", encoder_residual,
      "residual variant of the encoder only (empty: model.residual); Liu et al. 2020 "
      "Table 1 mixes Post-LN and Pre-LN stacks",
      any());
    v("decoder_residual", decoder_residual,
      "residual variant of the decoder only (empty: model.residual)", any());
    v("encoder_layers", encoder_layers,
      "number of encoder layers (N; 0 = embeddings straight to the output, an ablation)",
      in_range(0, 1000));
    v("decoder_layers", decoder_layers, "number of decoder layers (M)",
      in_range(1, 1000));
    v("d_model", d_model, "embedding and hidden size", in_range(2, 65536));
    v("ffn_dim", ffn_dim, "position-wise feed-forward inner size",
      in_range(1, 1 << 20));
    v("heads", heads, "attention heads (must divide d_model)",
      in_range(1, 1024));
    v("activation", activation, "feed-forward activation",
      one_of({"relu", "gelu"}));
    v("dropout", dropout, "dropout on embeddings and every branch output",
      in_range(0, 0.99));
    v("attention_dropout", attention_dropout,
      "dropout on attention probabilities", in_range(0, 0.99));
    v("activation_dropout", activation_dropout,
      "dropout after the FFN activation (fairseq's relu_dropout)",
      in_range(0, 0.99));
    v("share_decoder_input_output_embed", share_decoder_input_output_embed,
      "tie decoder input embedding and output projection", any());
    v("share_all_embeddings", share_all_embeddings,
      "one embedding for encoder, decoder and output (needs a joint vocab)",
      any());
    v("max_source_positions", max_source_positions,
      "longest source the positional table covers", in_range(1, 1 << 20));
    v("max_target_positions", max_target_positions,
      "longest target the positional table covers", in_range(1, 1 << 20));
    v("omega_shape", omega_shape,
      "admin: shortcut weight omega is a d_model vector or one scalar",
      one_of({"vector", "scalar"}));
    v("omega_trainable", omega_trainable,
      "admin: omega is a trained parameter (Transformer-Clinic) or a buffer",
      any());
    v("omega_scale", omega_scale,
      "admin_closed_form: output-change scale of admin-torch",
      one_of({"O(logn)", "O(1)"}));
    v("layer_norm_eps", layer_norm_eps, "epsilon of every LayerNorm (BERT uses 1e-12)",
      in_range(0, 1));
    v("checkpoint_activations", checkpoint_activations,
      "training keeps only each layer's input and recomputes the layer in "
      "backward (less memory, one extra forward)",
      any());
  }
};

struct DataConfig {
  std::string dir = "data/multi30k";
  std::string src_lang = "de";
  std::string tgt_lang = "en";
  std::string train = "train";
  std::string valid = "val";
  std::string test = "test_2016_flickr";
  std::string tokenizer = "sentencepiece";
  std::string spm_model_type = "bpe";
  int64_t vocab_size = 8000;
  bool joint_vocab = true;
  std::string spm_normalization = "nmt_nfkc";
  double character_coverage = 1.0;
  int64_t max_source_len = 256;
  int64_t max_target_len = 256;
  int64_t max_tokens = 4096;
  int64_t max_sentences = 0;
  int64_t prefetch = 4;
  int64_t shape_buckets = 0;
  std::string source = "corpus";
  std::string fixed_input;
  std::string fixed_target;
  int64_t fixed_vocab = 2;
  int64_t fixed_updates_per_epoch = 1000;
  std::string target_layout = "shifted";

  template <class V>
  void visit(V& v) {
    v("dir", dir,
      "corpus directory holding {train,valid,test}.{src,tgt}; relative "
      "paths are tried against the working directory, then the project root",
      any());
    v("src_lang", src_lang, "source file suffix", any());
    v("tgt_lang", tgt_lang, "target file suffix", any());
    v("train", train, "train split prefix", any());
    v("valid", valid, "validation split prefix", any());
    v("test", test, "test split prefix (clinic eval --split test)", any());
    v("tokenizer", tokenizer,
      "sentencepiece: train a SentencePiece model on the train split; "
      "pretokenized: text is already subword-split (fairseq BPE, '@@ ')",
      one_of({"sentencepiece", "pretokenized"}));
    v("spm_model_type", spm_model_type, "SentencePiece model type",
      one_of({"bpe", "unigram"}));
    v("vocab_size", vocab_size, "SentencePiece vocabulary size",
      in_range(8, 1 << 20));
    v("joint_vocab", joint_vocab,
      "one vocabulary for source and target (needed by share_all_embeddings)",
      any());
    v("spm_normalization", spm_normalization,
      "identity keeps tokenized text byte-exact (lossless decode)",
      one_of({"nmt_nfkc", "identity"}));
    v("character_coverage", character_coverage,
      "SentencePiece character coverage", in_range(0.9, 1.0));
    v("max_source_len", max_source_len,
      "drop training pairs whose source is longer (tokens, with EOS)",
      in_range(1, 1 << 20));
    v("max_target_len", max_target_len,
      "drop training pairs whose target is longer (tokens, with EOS)",
      in_range(1, 1 << 20));
    v("max_tokens", max_tokens,
      "token budget of a batch: rows x longest side, padding included",
      in_range(1, 1 << 30));
    v("max_sentences", max_sentences, "sentence cap per batch (0 = none)",
      at_least(0));
    v("prefetch", prefetch, "batches prepared ahead on a background thread",
      in_range(1, 256));
    v("shape_buckets", shape_buckets,
      "pad every training batch to one of N (rows x length) shapes, lengths doubling up to the "
      "longest kept row, rows filling max_tokens (0 = each batch its own shape); a handful of "
      "shapes per epoch is what CUDA graphs need",
      in_range(0, 16));
    v("source", source,
      "corpus (files under data.dir) or fixed_batch: every update sees data.fixed_input / "
      "fixed_target (toy experiments; no vocabulary files)",
      one_of({"corpus", "fixed_batch"}));
    v("fixed_input", fixed_input,
      "fixed_batch: token rows, ids in [0, fixed_vocab), rows separated by ';' (\"1 0; 0 1\")",
      any());
    v("fixed_target", fixed_target, "fixed_batch: the target id at every input position",
      any());
    v("fixed_vocab", fixed_vocab, "fixed_batch: size of the token vocabulary",
      in_range(1, 1 << 20));
    v("fixed_updates_per_epoch", fixed_updates_per_epoch,
      "fixed_batch: updates that make one epoch (validation, epoch checkpoint)",
      at_least(1));
    v("target_layout", target_layout,
      "shifted: decoder input BOS + target, output target + EOS (seq2seq); source_aligned: "
      "the target token at each source position, padded/truncated to the source length "
      "(taggers such as model.arch: encoder_tagger)",
      one_of({"shifted", "source_aligned"}));
  }
};

struct ScheduleConfig {
  std::string name = "inverse_sqrt";
  int64_t warmup_updates = 4000;
  double warmup_init_lr = 0.0;
  double end_lr = 0.0;
  int64_t total_updates = 0;
  int64_t noam_dim = 0;

  template <class V>
  void visit(V& v) {
    v("name", name,
      "lr schedule: inverse_sqrt, linear, cosine, constant, noam, or registered",
      any());
    v("warmup_updates", warmup_updates, "linear warmup length in updates",
      at_least(0));
    v("warmup_init_lr", warmup_init_lr, "lr at update 0 of the warmup",
      at_least(0));
    v("end_lr", end_lr, "linear/cosine: lr reached at total_updates",
      at_least(0));
    v("total_updates", total_updates,
      "linear/cosine decay length (0 = train.max_updates)", at_least(0));
    v("noam_dim", noam_dim,
      "noam: the d of optim.lr * d^-0.5 * min(k^-0.5, k * warmup^-1.5) (0 = model.d_model)",
      at_least(0));
  }
};

/// One entry of optim.groups: the trainable parameters whose names match
/// (`match`: a POSIX extended regex over the whole name; or `glob`: a shell pattern) take
/// these settings. Unset ones inherit optim.*; without `schedule` the group
/// follows the recipe's schedule with its own peak lr. `clinic params RECIPE`
/// lists every parameter and the group it lands in.
struct OptimGroupConfig {
  std::string name;  // [A-Za-z0-9_]+; logged as lr_<name>
  std::string match;
  std::string glob;
  std::optional<double> lr, eps, weight_decay;
  std::optional<std::vector<double>> betas;
  std::optional<ScheduleConfig> schedule;
  // "file:line" of the group in its recipe, for errors found once the model's
  // parameter names are known ("" for a group built in code).
  std::string where;
};

struct OptimConfig {
  std::string name = "adam";
  double lr = 5e-4;
  std::vector<double> betas = {0.9, 0.98};
  double eps = 1e-8;
  double weight_decay = 0.0;
  std::string flavour = "clinic";
  bool degenerate_to_sgd = false;
  bool decoupled_weight_decay = false;
  bool no_decay_bias_norm = false;
  std::string foreach = "auto";
  std::vector<OptimGroupConfig> groups;

  template <class V>
  void visit(V& v) {
    v("name", name, "optimizer: adam, adamw, radam, or a registered name",
      any());
    v("lr", lr, "peak learning rate", positive());
    v("betas", betas, "[beta1, beta2], each in [0, 1)", any());
    v("eps", eps, "denominator epsilon", positive());
    v("weight_decay", weight_decay, "weight decay factor", at_least(0));
    v("flavour", flavour,
      "radam: clinic (Transformer-Clinic), reference (LiyuanLucasLiu/RAdam) "
      "or torch (torch.optim.RAdam)",
      one_of({"clinic", "reference", "torch"}));
    v("degenerate_to_sgd", degenerate_to_sgd,
      "radam reference flavour: momentum-SGD step while rho_t < 5", any());
    v("decoupled_weight_decay", decoupled_weight_decay,
      "radam torch flavour: AdamW-style decay instead of L2", any());
    v("no_decay_bias_norm", no_decay_bias_norm,
      "exclude biases, LayerNorm gains and omega from weight decay", any());
    v("foreach", foreach,
      "true: step all tensors of a parameter group with multi-tensor (_foreach_*) ops; false: "
      "one tensor at a time (the same trajectory on CPU); auto: true on CUDA and wherever the "
      "update is decided on the device (train.host_reads: log_interval, train.cuda_graph, bench "
      "--throughput), else false (on the CPU the per-tensor step is the faster one)",
      one_of({"auto", "true", "false"}));
    v("groups", groups,
      "parameter groups, in order: [{name, match (regex) or glob, lr, betas, eps, "
      "weight_decay, schedule: {name, warmup_updates, ...}}]; a parameter in two groups or "
      "a group matching none is an error (recipes/README.md)",
      any());
  }
};


struct TrainConfig {
  int64_t seed = 1;
  int64_t threads = 0;
  std::string device = "auto";
  int64_t max_updates = 0;
  int64_t max_epochs = 0;
  double max_wall_s = 0;
  int64_t dist_timeout_s = 300;
  std::string dist_backend = "auto";
  int64_t update_freq = 1;
  double clip_norm = 0.0;
  std::string criterion = "label_smoothed_cross_entropy";
  double label_smoothing = 0.1;
  std::string smoothing_mass = "eps_over_v";
  std::string precision = "fp32";
  double loss_scale_init = 128.0;
  int64_t loss_scale_window = 256;
  double threshold_loss_scale = 0.0;
  double min_loss_scale = 1e-4;
  int64_t log_interval = 50;
  int64_t validate_interval = 0;
  int64_t save_interval = 0;
  int64_t keep_last = 2;
  bool keep_epoch_checkpoints = false;
  int64_t patience = 0;
  int64_t max_bad_steps = 5;
  bool zero_grad = true;
  std::string host_reads = "auto";
  bool cuda_graph = false;
  bool eval_bleu = false;
  std::string tensorboard = "tensorboard";

  template <class V>
  void visit(V& v) {
    v("seed", seed, "seed of init, dropout and batch order", at_least(0));
    v("threads", threads, "intra-op threads (0 = number of cores)",
      in_range(0, 1024));
    v("device", device, "auto picks cuda when available",
      one_of({"auto", "cpu", "cuda"}));
    v("max_updates", max_updates, "stop after this many updates (0 = none)",
      at_least(0));
    v("max_epochs", max_epochs, "stop after this many epochs (0 = none)",
      at_least(0));
    v("max_wall_s", max_wall_s, "stop after this many seconds (0 = none)",
      at_least(0));
    v("dist_timeout_s", dist_timeout_s,
      "data parallel (--nproc, torchrun): seconds a rank waits for the others at rendezvous "
      "and in a collective before it fails",
      at_least(1));
    v("dist_backend", dist_backend,
      "data parallel: c10d backend; auto is nccl when training on CUDA, gloo on CPU",
      one_of({"auto", "gloo", "nccl"}));
    v("update_freq", update_freq, "batches accumulated into one update",
      in_range(1, 4096));
    v("clip_norm", clip_norm, "gradient-norm clip (0 = off)", at_least(0));
    v("criterion", criterion,
      "loss: label_smoothed_cross_entropy, cross_entropy, or registered",
      any());
    v("label_smoothing", label_smoothing, "label smoothing epsilon",
      in_range(0, 0.999));
    v("smoothing_mass", smoothing_mass,
      "eps_over_v (fairseq 0.8 / Clinic) or eps_over_v_minus_1 (fairseq >= 0.9)",
      one_of({"eps_over_v", "eps_over_v_minus_1"}));
    v("precision", precision,
      "fp32, bf16 (autocast) or fp16 (autocast + dynamic loss scaling)",
      one_of({"fp32", "bf16", "fp16"}));
    v("loss_scale_init", loss_scale_init, "fp16: initial loss scale",
      positive());
    v("loss_scale_window", loss_scale_window,
      "fp16: clean updates before the scale doubles", at_least(1));
    v("threshold_loss_scale", threshold_loss_scale,
      "fp16: the scale never halves below this floor (0 = none)",
      at_least(0));
    v("min_loss_scale", min_loss_scale,
      "fp16: stop the run when the scale falls below this", at_least(0));
    v("log_interval", log_interval, "updates between metric lines",
      at_least(1));
    v("validate_interval", validate_interval,
      "updates between validations (0 = end of each epoch only)",
      at_least(0));
    v("save_interval", save_interval,
      "updates between checkpoints (0 = end of each epoch only)",
      at_least(0));
    v("keep_last", keep_last, "update checkpoints kept", at_least(1));
    v("keep_epoch_checkpoints", keep_epoch_checkpoints,
      "keep checkpoint_epochN.pt for every epoch (for averaging)", any());
    v("patience", patience,
      "stop after this many validations without improvement (0 = off)",
      at_least(0));
    v("max_bad_steps", max_bad_steps,
      "consecutive non-finite steps before the run stops", at_least(1));
    v("zero_grad", zero_grad,
      "false: gradients are never zeroed between updates, so each optimizer step sees the sum "
      "of all gradients so far (clipped), as a training loop without optimizer.zero_grad() "
      "does; only for reproducing such loops (docs/cases.md, case B)",
      any());
    v("host_reads", host_reads,
      "when an update's loss, token count and gradient norm come back to the host: "
      "every_update (the skip, clip and loss-scale decisions on the host; a non-finite value is "
      "localised), log_interval (decided on the device, read every log_interval updates and "
      "before validations, checkpoints and stops: no wait for the device per update; needs "
      "optim.foreach, one process and zero_grad; an update the instruments measure is decided on "
      "the host), auto (log_interval on CUDA "
      "where it can, else every_update)",
      one_of({"auto", "every_update", "log_interval"}));
    v("cuda_graph", cuda_graph,
      "capture one update per batch shape as a CUDA graph and replay it (one launch per "
      "update): needs train.host_reads deciding on the device, data.shape_buckets, "
      "train.update_freq 1 and a multi-tensor Adam, AdamW or RAdam; the first update of each "
      "shape runs eagerly, then it is captured; where capture fails the run goes on eagerly "
      "(one log line). Off CUDA the update runs as its graph would, without a capture",
      any());
    v("eval_bleu", eval_bleu,
      "validation also decodes and reports BLEU; best checkpoint by BLEU",
      any());
    v("tensorboard", tensorboard,
      "directory for TensorBoard event files of every metrics record, relative to the "
      "run dir unless absolute; empty = off",
      any());
  }
};

/// Stability instruments (Liu et al. 2020's measurements, framework/diagnostics):
/// every `interval` updates, on a fixed probe batch from the validation split,
/// layer dependency, output change, gradient/update norms, optimizer second
/// moments and attention statistics go to metrics.jsonl as "diag" records; a
/// loss-spike detector runs on every update. Measuring never changes training:
/// a run is bit-identical with the instruments on or off.
struct DiagConfig {
  int64_t interval = 100;
  int64_t probe_sentences = 16;
  double perturbation = 1e-3;
  double spike_abs = 10.0;
  int64_t spike_window = 100;
  double spike_z = 10.0;
  double collapse_fraction = 0.9;

  template <class V>
  void visit(V& v) {
    v("interval", interval, "updates between measurements (0 = off: nothing runs)",
      at_least(0));
    v("probe_sentences", probe_sentences,
      "validation sentences in the fixed probe batch (saved in checkpoints)",
      in_range(1, 4096));
    v("perturbation", perturbation,
      "relative size of the random weight perturbation: Frobenius norm of delta = "
      "perturbation x that of W, per weight matrix",
      in_range(1e-9, 1));
    v("spike_abs", spike_abs,
      "a loss spike: training loss (bits/token) above the previous update's by this much",
      positive());
    v("spike_window", spike_window, "updates in the robust spike rule's median/MAD window",
      in_range(5, 100000));
    v("spike_z", spike_z,
      "robust spike rule: loss - median > spike_z * max(1.4826 MAD, 0.01) over the window",
      positive());
    v("collapse_fraction", collapse_fraction,
      "attention collapse: this fraction of a head's queries has the same most-attended key",
      in_range(0.5, 1));
  }
};

struct EvalConfig {
  int64_t beam = 5;
  double lenpen = 1.0;
  double max_len_a = 0.0;
  int64_t max_len_b = 200;
  int64_t min_len = 1;
  int64_t nbest = 1;
  int64_t max_tokens = 4096;
  std::string bleu_tokenize = "13a";
  bool lowercase = false;
  bool cuda_graph = false;

  template <class V>
  void visit(V& v) {
    v("beam", beam, "beam size (1 = greedy)", in_range(1, 1024));
    v("lenpen", lenpen, "score = sum log p / length^lenpen", at_least(0));
    v("max_len_a", max_len_a, "max output length = a * src_len + b",
      at_least(0));
    v("max_len_b", max_len_b, "max output length = a * src_len + b",
      in_range(1, 1 << 20));
    v("min_len", min_len, "minimum output length", at_least(0));
    v("nbest", nbest, "hypotheses printed per sentence", in_range(1, 1024));
    v("max_tokens", max_tokens, "source-token budget of a decoding batch",
      at_least(1));
    v("bleu_tokenize", bleu_tokenize,
      "13a (sacreBLEU default), intl (mteval-v14 international) or none "
      "(already tokenized text)",
      one_of({"13a", "intl", "none"}));
    v("lowercase", lowercase, "lowercase before BLEU", any());
    v("cuda_graph", cuda_graph,
      "beam search with a static KV cache and its decoder step captured as a CUDA graph, "
      "replayed every step (one launch per step); the first step runs eagerly. Where the model "
      "has no static cache or capture fails, the growing cache (one log line). Off CUDA the "
      "static cache without a capture",
      any());
  }
};

/// A whole recipe. Precedence: struct defaults < base recipe(s) < recipe
/// < --set overrides.
struct RunConfig {
  std::string description;
  ModelConfig model;
  DataConfig data;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainConfig train;
  EvalConfig eval;
  DiagConfig diag;
  /// Where each key's value came from ("recipes/x.yaml:12", "--set"); keys
  /// left at their default have no entry.
  std::map<std::string, std::string> origin;
  /// Recipe file resolved, empty when built in code.
  std::string source;

  template <class V>
  void visit_sections(V& v) {
    v.section("model", model);
    v.section("data", data);
    v.section("optim", optim);
    v.section("schedule", schedule);
    v.section("train", train);
    v.section("eval", eval);
    v.section("diag", diag);
  }
};

/// Load a recipe by path or by name ("multi30k/admin" ->
/// <recipes_dir>/multi30k/admin.yaml), following `base:` chains, then apply
/// `overrides` ("model.encoder_layers=18") and validate.
RunConfig load_recipe(const std::string& name_or_path,
                      const std::vector<std::string>& overrides = {});
/// Parse YAML text (no base, no file) and validate; `label` names it in errors.
RunConfig parse_recipe_text(const std::string& yaml, const std::string& label,
                            const std::vector<std::string>& overrides = {});
/// Apply one "section.key=value" override. `label` names it in errors
/// (default "--set section.key=value"; a command-line flag passes "--beam 0").
void apply_override(RunConfig& cfg, const std::string& assignment,
                    const std::string& label = "");
/// Check ranges, choices and cross-field constraints; throws ConfigError.
void validate(const RunConfig& cfg);
/// The fully resolved recipe as YAML (round-trips through parse_recipe_text).
std::string to_yaml(const RunConfig& cfg);
/// One key whose value differs between two recipes (YAML text of each).
struct ConfigDifference {
  std::string key, a, b;
};
/// Every key (section.key, in declaration order) whose value differs.
std::vector<ConfigDifference> config_differences(const RunConfig& a, const RunConfig& b);
/// Markdown table of every key: section, key, type, default, allowed, meaning.
std::string describe_keys();

/// Directory searched for recipes by name: $CLINIC_RECIPES, else
/// ./recipes, else the source tree's recipes/.
std::string recipes_dir();
/// Root of the project (the directory holding recipes/), for resolving
/// relative data paths.
std::string project_root();
/// All recipes under recipes_dir(), as names ("multi30k/admin").
std::vector<std::string> list_recipes();
/// Resolve a relative path against the working directory, then project_root.
std::string resolve_data_path(const std::string& path);
/// Closest string by edit distance (for "did you mean" hints); empty if none
/// is close.
std::string closest_match(const std::string& word,
                          const std::vector<std::string>& candidates);

}  // namespace clinic
