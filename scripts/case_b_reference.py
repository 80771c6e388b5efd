#!/usr/bin/env python3
"""Case B (docs/cases.md) as a plain PyTorch program, written from the report's
specification independently of clinic: the reference that says whether the
reported loss spikes come from the specified system at all.

A 1-layer BERT-style causal Transformer (HF BertModel's layout: word +
learned position [+ token-type] embeddings -> LayerNorm(eps 1e-12) -> dropout;
one post-LN layer: self-attention with dropout on the probabilities, output
projection, dropout, residual, LayerNorm; GELU FFN, dropout, residual,
LayerNorm), hidden 32, 2 heads, intermediate 64, dropout 0.1, a linear head
over vocab 2. BERT's init: N(0, 0.02) weights, zero biases, LayerNorm 1/0.
Data: input [[1,0],[0,1]], target 1 - input, every step; mean cross-entropy.
Adam(lr 1.0, betas (0.9, 0.98), eps 1e-9) with the Noam factor
32^-0.5 * min(step^-0.5, step * 3000^-1.5) (step from 1), clip_grad_norm_ 1.

Prints a JSON line every 10k steps (the last has "done": true): the step where
the loss first reached exactly 0, the spikes (loss[t] - loss[t-1] >= 10 nats)
per 10k-step window, the largest jump.
Needs only python3 with torch (Debian's python3-torch). Example:
  python3 scripts/case_b_reference.py --seed 1 --steps 100000
"""
import argparse
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Layer(nn.Module):
    def __init__(self, d, heads, ff, p):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.p = p

    def forward(self, x, mask):
        b, t, d = x.shape
        hd = d // self.heads

        def split(y):
            return y.view(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
        probs = F.dropout(scores.softmax(-1), self.p, self.training)
        ctx = (probs @ v).transpose(1, 2).reshape(b, t, d)
        x = self.ln1(x + F.dropout(self.o(ctx), self.p, self.training))
        h = self.fc2(F.gelu(self.fc1(x)))
        return self.ln2(x + F.dropout(h, self.p, self.training))


class Toy(nn.Module):
    def __init__(self, vocab=2, d=32, heads=2, ff=64, p=0.1, positions=8, layers=1,
                 token_type=False, padding_idx=None, bert_init=True, head_dropout=False):
        super().__init__()
        self.tok = nn.Embedding(vocab, d, padding_idx=padding_idx)
        self.pos = nn.Embedding(positions, d)
        self.typ = nn.Embedding(2, d) if token_type else None
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(Layer(d, heads, ff, p) for _ in range(layers))
        self.head = nn.Linear(d, vocab)
        self.p = p
        self.head_dropout = head_dropout
        for m in self.modules() if bert_init else ():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        if padding_idx is not None:  # HF zeroes the pad row (and nn.Embedding never updates it)
            with torch.no_grad():
                self.tok.weight[padding_idx].zero_()

    def forward(self, ids):
        t = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(t))
        if self.typ is not None:
            x = x + self.typ(torch.zeros_like(ids))
        x = F.dropout(self.ln(x), self.p, self.training)
        mask = torch.full((t, t), torch.finfo(x.dtype).min, dtype=x.dtype).triu(1)
        for layer in self.layers:
            x = layer(x, mask)
        if self.head_dropout:  # as HF's BertForTokenClassification: dropout, then the classifier
            x = F.dropout(x, self.p, self.training)
        return self.head(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--layers", type=int, default=1, help="0: embedding -> output")
    ap.add_argument("--token-type", action="store_true", help="add BERT's token-type embedding")
    ap.add_argument("--pad-zero", action="store_true",
                    help="HF BertConfig's pad_token_id 0: token 0's embedding is a frozen zero row")
    ap.add_argument("--torch-init", action="store_true",
                    help="PyTorch's default init (N(0,1) embeddings, kaiming-uniform Linear) instead of BERT's")
    ap.add_argument("--head-dropout", action="store_true",
                    help="dropout on the last hidden states before the head (BertForTokenClassification)")
    ap.add_argument("--label-smoothing", type=float, default=0.0,
                    help="F.cross_entropy's label_smoothing over the 2 classes")
    ap.add_argument("--eps", type=float, default=1e-9)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                    help="the whole model, its gradients and Adam's state in this dtype "
                         "(model.to(dtype), no autocast, no loss scaling)")
    ap.add_argument("--factor", type=float, default=1.0, help="Noam's factor (Adam's lr)")
    ap.add_argument("--warmup", type=int, default=3000)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--jump", type=float, default=10.0, help="spike: loss rise in nats")
    ap.add_argument("--mask-probe", type=int, default=0,
                    help="after training, N forward passes in train mode (N dropout masks): "
                         "the largest loss and the smallest logit margin any mask gives")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    model = Toy(layers=a.layers, token_type=a.token_type, p=a.dropout,
                padding_idx=0 if a.pad_zero else None, bert_init=not a.torch_init, head_dropout=a.head_dropout)
    model.to(getattr(torch, a.dtype))
    ids = torch.tensor([[1, 0], [0, 1]])
    target = 1 - ids
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=a.eps)
    noam = lambda k: a.factor * 32 ** -0.5 * min((k + 1) ** -0.5, (k + 1) * a.warmup ** -1.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, noam)
    prev, first_zero, spikes, largest = None, None, [], 0.0
    for step in range(1, a.steps + 1):
        opt.zero_grad()
        loss = F.cross_entropy(model(ids).reshape(-1, 2), target.reshape(-1),
                               label_smoothing=a.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = loss.item()
        if first_zero is None and value == 0.0:
            first_zero = step
        if prev is not None and value - prev >= a.jump:
            spikes.append(step)
            largest = max(largest, value - prev)
        prev = value
        # A line per 10k steps (flushed), so a run cut short still reports.
        if step % 10000 == 0 or step == a.steps:
            windows = [sum(1 for s in spikes if w * 10000 < s <= (w + 1) * 10000)
                       for w in range((step + 9999) // 10000)]
            print(json.dumps({"seed": a.seed, "layers": a.layers, "token_type": a.token_type, "pad_zero": a.pad_zero, "torch_init": a.torch_init, "label_smoothing": a.label_smoothing, "head_dropout": a.head_dropout, "dtype": a.dtype,
                              "eps": a.eps, "dropout": a.dropout, "factor": a.factor,
                              "warmup": a.warmup, "steps": step,
                              "done": step == a.steps, "first_zero_loss_step": first_zero,
                              "spikes": len(spikes), "spikes_per_10k": windows,
                              "largest_jump_nats": round(largest, 3), "final_loss": value,
                              "torch": torch.__version__}), flush=True)
    if a.mask_probe:
        worst, margin = probe_masks(model, ids, target, a.mask_probe)
        print(json.dumps({"seed": a.seed, "steps": a.steps, "masks": a.mask_probe,
                          "largest_loss_nats": worst, "smallest_margin_nats": margin,
                          "margin_without_dropout_nats": probe_masks(model, ids, target, 1,
                                                                     dropout=False)[1]}),
              flush=True)


def probe_masks(model, ids, target, n, dropout=True):
    """The loss a spike would start from: under n fresh dropout masks (train
    mode, no update), the largest loss and the smallest margin (correct logit
    minus wrong logit) over the 4 tokens and all masks."""
    model.train(dropout)
    worst_loss, min_margin = 0.0, math.inf
    with torch.no_grad():
        for _ in range(n):
            logits = model(ids).reshape(-1, 2)
            t = target.reshape(-1)
            worst_loss = max(worst_loss, F.cross_entropy(logits, t).item())
            correct = logits.gather(1, t[:, None])[:, 0]
            min_margin = min(min_margin, (correct - logits.gather(1, (1 - t)[:, None])[:, 0]).min().item())
    return worst_loss, min_margin


if __name__ == "__main__":
    main()
