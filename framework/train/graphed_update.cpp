#include "framework/train/graphed_update.h"

namespace clinic {

UpdateGraphs::UpdateGraphs(Body body, std::function<torch::Tensor(int64_t)> make_tokens,
                           MakeCapturer make)
    : body_(std::move(body)), make_tokens_(std::move(make_tokens)), make_(std::move(make)) {}

void UpdateGraphs::run(const Batch& batch, uint64_t layout) {
  // The key: every shape the body sees (source and target lengths may differ).
  std::vector<int64_t> key;
  for (const torch::Tensor* t : {&batch.src, &batch.tgt_in, &batch.tgt_out})
    for (int64_t d : t->sizes()) key.push_back(d);
  auto [it, fresh] = entries_.try_emplace(key);
  Entry& e = it->second;
  torch::NoGradGuard ng;
  if (fresh) {
    e.statics.src = torch::empty_like(batch.src);
    e.statics.tgt_in = torch::empty_like(batch.tgt_in);
    e.statics.tgt_out = torch::empty_like(batch.tgt_out);
    e.tokens = make_tokens_(0);
    // The host's counts are not data a graph could see change: -1, so a
    // body that read them would be wrong at once, graph or not.
    e.statics.src_tokens = e.statics.tgt_tokens = -1;
  }
  // The data of this update into the buffers the body (and its graph) reads.
  e.statics.src.copy_(batch.src, /*non_blocking=*/true);
  e.statics.tgt_in.copy_(batch.tgt_in, true);
  e.statics.tgt_out.copy_(batch.tgt_out, true);
  e.tokens.fill_(static_cast<double>(batch.tgt_tokens));
  e.runs += 1;
  {
    at::AutoGradMode grad(true);
    const bool can_capture = make_ != nullptr && refused_.empty() && e.runs >= 2;
    if (can_capture && (!e.graph || e.layout != layout)) {
      std::unique_ptr<GraphCapturer> g = make_();
      try {
        g->capture([&] { body_(e.statics, e.tokens); });
        e.graph = std::move(g);
        e.layout = layout;
        captures_ += 1;
      } catch (const std::exception& ex) {
        // A capture runs nothing, so the update is still to be made: eagerly.
        std::string what = ex.what();
        refused_ = what.substr(0, what.find('\n'));
        for (auto& kv : entries_) kv.second.graph.reset();
      }
    }
    if (refused_.empty() && e.graph) {
      e.graph->replay();
      replays_ += 1;
    } else {
      body_(e.statics, e.tokens);
    }
  }
}

}  // namespace clinic
