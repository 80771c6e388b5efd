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

Prints a JSON line every 10k steps and at the end ("done": true; a non-finite
loss ends the run, with the step it first appeared): the step where
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


# --amp: CUDA autocast's policy, applied by hand so that it means the same on
# this CPU (CPU autocast keeps layer_norm and softmax in half, CUDA's casts
# them to fp32): linear layers and matmuls in the half type, layer_norm,
# softmax and the loss in fp32, everything else in whatever type arrives.
AMP = None


# --tf32: every matmul's operands rounded to TF32 (10-bit mantissa, fp32's
# exponent), forward and backward, as cuBLAS did on Ampere GPUs under PyTorch
# 1.7-1.11, whose torch.backends.cuda.matmul.allow_tf32 defaulted to True.
TF32 = False


def tf32(x):
    """Round-to-nearest (ties away) of an fp32 tensor to TF32, kept in fp32."""
    i = x.contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


class TF32MatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):  # a [..., n, k] @ b [..., k, m], same batch shape
        ctx.save_for_backward(a, b)
        return tf32(a) @ tf32(b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        g = tf32(g)
        return g @ tf32(b).transpose(-1, -2), tf32(a).transpose(-1, -2) @ g


def lin(m, x):
    if TF32:
        y = TF32MatMul.apply(x.reshape(-1, x.shape[-1]), m.weight.t())
        return y.reshape(*x.shape[:-1], -1) + m.bias
    if AMP is None:
        return m(x)
    return F.linear(x.to(AMP), m.weight.to(AMP), m.bias.to(AMP))


def mm(a, b):
    if TF32:
        return TF32MatMul.apply(a, b)
    return a @ b if AMP is None else a.to(AMP) @ b.to(AMP)


def norm(m, x):
    return m(x) if AMP is None else m(x.float())


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

        q, k, v = split(lin(self.q, x)), split(lin(self.k, x)), split(lin(self.v, x))
        scores = mm(q, k.transpose(-1, -2)) / math.sqrt(hd) + mask  # + an fp32 mask: fp32
        probs = F.dropout(scores.float().softmax(-1) if AMP else scores.softmax(-1),
                          self.p, self.training)
        ctx = mm(probs, v).transpose(1, 2).reshape(b, t, d)
        x = norm(self.ln1, x + F.dropout(lin(self.o, ctx), self.p, self.training))
        h = lin(self.fc2, F.gelu(lin(self.fc1, x)))
        return norm(self.ln2, x + F.dropout(h, self.p, self.training))


class Toy(nn.Module):
    def __init__(self, vocab=2, d=32, heads=2, ff=64, p=0.1, positions=8, layers=1,
                 token_type=False, padding_idx=None, bert_init=True, head_dropout=False,
                 own_embedding=False, causal=True):
        super().__init__()
        self.tok = nn.Embedding(vocab, d, padding_idx=padding_idx)
        self.pos = nn.Embedding(positions, d)
        self.typ = nn.Embedding(2, d) if token_type else None
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(Layer(d, heads, ff, p) for _ in range(layers))
        self.head = nn.Linear(d, vocab)
        self.p = p
        self.head_dropout = head_dropout
        self.causal = causal
        for m in self.modules() if bert_init else ():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        if own_embedding:  # the report's script: nn.Embedding -> BertModel(inputs_embeds) -> nn.Linear
            self.tok.reset_parameters()   # N(0, 1), outside BERT's init
            self.head.reset_parameters()  # kaiming-uniform weight, U(+-1/sqrt(32)) bias
        if padding_idx is not None:  # HF zeroes the pad row (and nn.Embedding never updates it)
            with torch.no_grad():
                self.tok.weight[padding_idx].zero_()

    def forward(self, ids):
        t = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(t))
        if self.typ is not None:
            x = x + self.typ(torch.zeros_like(ids))
        x = F.dropout(norm(self.ln, x), self.p, self.training)
        mask = torch.full((t, t), torch.finfo(x.dtype).min, dtype=x.dtype).triu(1)
        if not self.causal:  # HF BertModel without is_decoder: every token sees both
            mask = torch.zeros_like(mask)
        for layer in self.layers:
            x = layer(x, mask)
        if self.head_dropout:  # as HF's BertForTokenClassification: dropout, then the classifier
            x = F.dropout(x, self.p, self.training)
        return lin(self.head, x)


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
    ap.add_argument("--own-embedding", action="store_true",
                    help="the token embedding and the head outside BERT, with PyTorch's default "
                         "init (N(0,1) nn.Embedding, nn.Linear's), as the report's script "
                         "(nn.Embedding -> BertModel(inputs_embeds=...) -> nn.Linear); BERT's init inside")
    ap.add_argument("--bidirectional", action="store_true",
                    help="no causal mask (HF BertModel's default, is_decoder False)")
    ap.add_argument("--head-dropout", action="store_true",
                    help="dropout on the last hidden states before the head (BertForTokenClassification)")
    ap.add_argument("--label-smoothing", type=float, default=0.0,
                    help="F.cross_entropy's label_smoothing over the 2 classes")
    ap.add_argument("--eps", type=float, default=1e-9)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                    help="the whole model, its gradients and Adam's state in this dtype "
                         "(model.to(dtype), no autocast, no loss scaling)")
    ap.add_argument("--amp", choices=["float16", "bfloat16"], default=None,
                    help="mixed precision as CUDA autocast does it (fp32 weights and Adam; "
                         "linear/matmul in this type, layer_norm/softmax/loss in fp32); "
                         "float16 with torch's GradScaler (init 65536, x2 per 2000 good steps)")
    ap.add_argument("--tf32", action="store_true",
                    help="every matmul in TF32 (forward and backward), as on an Ampere GPU "
                         "under PyTorch 1.7-1.11's default")
    ap.add_argument("--accumulate", action="store_true",
                    help="never zero the gradients: each step's gradient is added to all "
                         "earlier ones (a training loop without optimizer.zero_grad())")
    ap.add_argument("--factor", type=float, default=1.0, help="Noam's factor (Adam's lr)")
    ap.add_argument("--warmup", type=int, default=3000)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--jump", type=float, default=10.0, help="spike: loss rise in nats")
    ap.add_argument("--mask-probe", type=int, default=0,
                    help="after training, N forward passes in train mode (N dropout masks): "
                         "the largest loss and the smallest logit margin any mask gives")
    a = ap.parse_args()
    global AMP, TF32
    AMP = getattr(torch, a.amp) if a.amp else None
    TF32 = a.tf32
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    model = Toy(layers=a.layers, token_type=a.token_type, p=a.dropout,
                padding_idx=0 if a.pad_zero else None, bert_init=not a.torch_init, head_dropout=a.head_dropout,
                own_embedding=a.own_embedding, causal=not a.bidirectional)
    model.to(getattr(torch, a.dtype))
    ids = torch.tensor([[1, 0], [0, 1]])
    target = 1 - ids
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=a.eps)
    noam = lambda k: a.factor * 32 ** -0.5 * min((k + 1) ** -0.5, (k + 1) * a.warmup ** -1.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, noam)
    scaler = torch.amp.GradScaler("cpu") if a.amp == "float16" else None
    prev, first_zero, spikes, largest, skipped, first_nan = None, None, [], 0.0, 0, None
    for step in range(1, a.steps + 1):
        if not a.accumulate:
            opt.zero_grad()
        logits = model(ids).reshape(-1, 2)
        loss = F.cross_entropy(logits.float() if AMP else logits, target.reshape(-1),
                               label_smoothing=a.label_smoothing)
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        else:  # torch's AMP recipe: scale, unscale before clipping, step skips on inf
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            before = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            skipped += scaler.get_scale() < before
        sched.step()
        value = loss.item()
        if first_nan is None and not math.isfinite(value):
            first_nan = step
        if first_zero is None and value == 0.0:
            first_zero = step
        if prev is not None and value - prev >= a.jump:
            spikes.append(step)
            largest = max(largest, value - prev)
        prev = value
        # A line per 10k steps (flushed), so a run cut short still reports;
        # a non-finite loss ends the run (it never comes back).
        stop = first_nan is not None
        if step % 10000 == 0 or step == a.steps or stop:
            windows = [sum(1 for s in spikes if w * 10000 < s <= (w + 1) * 10000)
                       for w in range((step + 9999) // 10000)]
            print(json.dumps({"seed": a.seed, "layers": a.layers, "token_type": a.token_type, "pad_zero": a.pad_zero, "torch_init": a.torch_init, "own_embedding": a.own_embedding, "bidirectional": a.bidirectional, "label_smoothing": a.label_smoothing, "head_dropout": a.head_dropout, "dtype": a.dtype, "amp": a.amp, "tf32": a.tf32, "accumulate": a.accumulate,
                              "skipped": skipped, "loss_scale": scaler.get_scale() if scaler else None,
                              "eps": a.eps, "dropout": a.dropout, "factor": a.factor,
                              "warmup": a.warmup, "steps": step,
                              "done": step == a.steps or stop, "first_zero_loss_step": first_zero,
                              "first_nonfinite_step": first_nan,
                              "spikes": len(spikes), "spikes_per_10k": windows,
                              "largest_jump_nats": round(largest, 3), "final_loss": value,
                              "torch": torch.__version__}), flush=True)
        if stop:
            break
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
