#!/usr/bin/python3
"""Plain-PyTorch reference for `clinic bench --compare-python` and for
`scripts/gpu-check.sh perf` (issue 33: clinic beside PyTorch on the same GPU).

The same encoder-decoder Transformer (fairseq conventions: fused in-projection,
sinusoidal positions, embeddings scaled by sqrt(d), tied output projection),
written the way a PyTorch user would, trained with Adam.
With --compare-python it runs on Debian's python3-torch, i.e. the same
LibTorch 1.13 kernels as clinic; on a GPU, on the PyTorch 2.x wheel.

Usage: reference_train.py MODEL.pt [BATCH.pt] --steps N --threads T --lr LR
           --label-smoothing EPS --dropout P --attention-dropout P
           --activation-dropout P [--pre-ln]
           [--device cpu|cuda] [--precision fp32|bf16|fp16]
           [--compile none|default|max-autotune] [--copy ROWS,LEN] [--warmup N]
           [--curve-points K] [--seed S] [--loss-scale-init X]
  MODEL.pt  clinic's TorchScript export of the freshly initialised model
            (weights; `clinic bench --save-init`)
  BATCH.pt  TorchScript module with buffers src, tgt_in, tgt_out (one batch
            trained on every step), or --copy ROWS,LEN: a new synthetic copy
            batch per step (target = source, as `clinic bench --task copy`),
            drawn on the device.
--precision: autocast in bf16 or fp16 (fp16 with torch's GradScaler);
--compile: torch.compile of the model (compile time reported apart, in the
warm-up). Prints one JSON object: loss_eval (label-smoothed loss per target
token in eval mode before training, nats), tokens_per_s, tgt_tokens_per_s,
ms_per_update, phase times (only without --copy: they synchronise),
peak_memory_mb (CUDA), loss_curve, warmup_s.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.d, self.h, self.dropout = d, heads, dropout
        self.in_proj = nn.Linear(d, 3 * d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, q_in, kv_in, mask):
        B, T, S, d, H = q_in.size(0), q_in.size(1), kv_in.size(1), self.d, self.h
        if q_in is kv_in:
            q, k, v = self.in_proj(q_in).chunk(3, -1)
        else:
            w, b = self.in_proj.weight, self.in_proj.bias
            q = F.linear(q_in, w[:d], b[:d])
            k, v = F.linear(kv_in, w[d:], b[d:]).chunk(2, -1)
        q = q.view(B, T, H, -1).transpose(1, 2) * (d // H) ** -0.5
        k = k.view(B, S, H, -1).transpose(1, 2)
        v = v.view(B, S, H, -1).transpose(1, 2)
        attn = (q @ k.transpose(-1, -2) + mask).softmax(-1)
        attn = F.dropout(attn, self.dropout, self.training)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(B, T, d))


class Layer(nn.Module):
    def __init__(self, d, f, heads, args, cross):
        super().__init__()
        self.pre, self.p = args.pre_ln, args.dropout
        self.self_attn = Attention(d, heads, args.attention_dropout)
        self.cross_attn = Attention(d, heads, args.attention_dropout) if cross else None
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)
        self.act_p = args.activation_dropout
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3 if cross else 2))

    def sub(self, i, x, fn):
        h = self.norms[i](x) if self.pre else x
        y = x + F.dropout(fn(h), self.p, self.training)
        return y if self.pre else self.norms[i](y)

    def forward(self, x, mask, enc=None, enc_mask=None):
        x = self.sub(0, x, lambda h: self.self_attn(h, h, mask))
        i = 1
        if self.cross_attn is not None:
            x = self.sub(1, x, lambda h: self.cross_attn(h, enc, enc_mask))
            i = 2
        ffn = lambda h: self.fc2(F.dropout(F.relu(self.fc1(h)), self.act_p, self.training))
        return self.sub(i, x, ffn)


class Transformer(nn.Module):
    def __init__(self, P, n_enc, n_dec, d, f, heads, args):
        super().__init__()
        self.d, self.p = d, args.dropout
        self.embed = nn.Embedding(P["encoder_embed.weight"].size(0), d)
        self.register_buffer("table", P["positions.table"].clone())
        self.enc = nn.ModuleList(Layer(d, f, heads, args, False) for _ in range(n_enc))
        self.dec = nn.ModuleList(Layer(d, f, heads, args, True) for _ in range(n_dec))
        self.enc_norm = nn.LayerNorm(d) if args.pre_ln else None
        self.dec_norm = nn.LayerNorm(d) if args.pre_ln else None
        with torch.no_grad():  # clinic's initial weights, by name
            self.embed.weight.copy_(P["encoder_embed.weight"])
            for stack, name, cross in ((self.enc, "encoder", False), (self.dec, "decoder", True)):
                for l, layer in enumerate(stack):
                    pre = "%s_layers.%d." % (name, l)
                    attns = [("self_attn", layer.self_attn)] + ([("cross_attn", layer.cross_attn)] if cross else [])
                    for an, a in attns:
                        a.in_proj.weight.copy_(P[pre + an + ".in_proj_weight"])
                        a.in_proj.bias.copy_(P[pre + an + ".in_proj_bias"])
                        a.out_proj.weight.copy_(P[pre + an + ".out_proj.weight"])
                        a.out_proj.bias.copy_(P[pre + an + ".out_proj.bias"])
                    for fc in ("fc1", "fc2"):
                        getattr(layer, fc).weight.copy_(P[pre + "ffn." + fc + ".weight"])
                        getattr(layer, fc).bias.copy_(P[pre + "ffn." + fc + ".bias"])

    def embed_tokens(self, t):
        nonpad = (t != 0).long()
        x = self.embed(t) * math.sqrt(self.d) + F.embedding(torch.cumsum(nonpad, 1) * nonpad, self.table)
        return F.dropout(x, self.p, self.training)

    def forward(self, src, tgt):
        src_mask = torch.zeros(src.shape, dtype=torch.float, device=src.device).masked_fill(
            src == 0, float("-inf"))[:, None, None, :]
        x = self.embed_tokens(src)
        for layer in self.enc:
            x = layer(x, src_mask)
        if self.enc_norm is not None:
            x = self.enc_norm(x)
        T = tgt.size(1)
        future = torch.full((T, T), float("-inf"), device=tgt.device).triu(1)
        y = self.embed_tokens(tgt)
        for layer in self.dec:
            y = layer(y, future, x, src_mask)
        if self.dec_norm is not None:
            y = self.dec_norm(y)
        return F.linear(y, self.embed.weight)


def smoothed_loss(logits, target, eps):
    lprobs = logits.float().log_softmax(-1).view(-1, logits.size(-1))
    t = target.reshape(-1, 1)
    keep = (t != 0).float()
    nll = -(lprobs.gather(1, t) * keep).sum()
    smooth = -(lprobs.sum(-1, keepdim=True) * keep).sum()
    return (1 - eps) * nll + eps / lprobs.size(-1) * smooth


def copy_batch(rows, length, vocab, device, gen):
    """A copy batch as `clinic bench --task copy` makes it: ids above EOS
    (clinic's pad 0, BOS 2, EOS 3), target = source, input = BOS + source[:-1]."""
    src = torch.randint(4, vocab, (rows, length), device=device, generator=gen)
    bos = torch.full((rows, 1), 2, dtype=src.dtype, device=device)
    return src, torch.cat([bos, src[:, :-1]], 1), src


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("batch", nargs="?")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--attention-dropout", type=float, default=0.0)
    ap.add_argument("--activation-dropout", type=float, default=0.0)
    ap.add_argument("--pre-ln", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    ap.add_argument("--compile", choices=("none", "default", "max-autotune"), default="none")
    ap.add_argument("--copy", help="ROWS,LEN: a synthetic copy batch per step")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--curve-points", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--loss-scale-init", type=float, default=65536.0)
    args = ap.parse_args()
    if (args.batch is None) == (args.copy is None):
        ap.error("give BATCH.pt or --copy ROWS,LEN (one of them)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    exported = torch.jit.load(args.model, map_location="cpu")
    P = {}
    for n, t in list(exported.named_parameters()) + list(exported.named_buffers()):
        P[n[2:].replace("_", ".")] = t.detach()
    # Undo the flattening of names: find the clinic names by pattern.
    P = {k.replace("encoder.layers", "encoder_layers").replace("decoder.layers", "decoder_layers")
          .replace("encoder.embed", "encoder_embed").replace("in.proj.", "in_proj_")
          .replace("out.proj", "out_proj").replace("self.attn", "self_attn")
          .replace("cross.attn", "cross_attn"): v for k, v in P.items()}
    n_enc = len({k.split(".")[1] for k in P if k.startswith("encoder_layers.")})
    n_dec = len({k.split(".")[1] for k in P if k.startswith("decoder_layers.")})
    d, heads = exported.d_model, exported.heads
    f = P["encoder_layers.0.ffn.fc1.weight"].size(0)
    vocab = P["encoder_embed.weight"].size(0)
    model = Transformer(P, n_enc, n_dec, d, f, heads, args).to(device)
    gen = None
    if args.copy:
        rows, length = (int(x) for x in args.copy.split(","))
        gen = torch.Generator(device=device)
        gen.manual_seed(args.seed)
        next_batch = lambda: copy_batch(rows, length, vocab, device, gen)
    else:
        b = torch.jit.load(args.batch, map_location="cpu")
        fixed = (b.src.to(device), b.tgt_in.to(device), b.tgt_out.to(device))
        next_batch = lambda: fixed
    src, tgt_in, tgt_out = next_batch()
    ntok = int((tgt_out != 0).sum())
    src_tok = int((src != 0).sum())
    model.eval()
    with torch.no_grad():
        loss_eval = float(smoothed_loss(model(src, tgt_in), tgt_out, args.label_smoothing)) / ntok
    model.train()
    fwd = model
    if args.compile != "none":
        fwd = torch.compile(model, mode=None if args.compile == "default" else args.compile)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    scaler = None
    if args.precision == "fp16":
        scaler = torch.amp.GradScaler(device.type, init_scale=args.loss_scale_init)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    phases = not args.copy  # a fixed batch: time the phases (synchronising) as before
    every = max(1, args.steps // args.curve_points) if args.curve_points > 0 else 0
    curve = []
    t_f = t_b = t_o = 0.0
    t_warm0 = time.perf_counter()
    t_start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync()
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            t_start = time.perf_counter()
        timed = step >= args.warmup
        if step > 0:
            src, tgt_in, tgt_out = next_batch()
        t0 = time.perf_counter()
        opt.zero_grad()
        if dtype is None:
            logits = fwd(src, tgt_in)
        else:
            with torch.autocast(device.type, dtype=dtype):
                logits = fwd(src, tgt_in)
        loss = smoothed_loss(logits, tgt_out, args.label_smoothing) / ntok
        if phases:
            sync()
        t1 = time.perf_counter()
        (scaler.scale(loss) if scaler else loss).backward()
        if phases:
            sync()
        t2 = time.perf_counter()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if phases:
            sync()
        t3 = time.perf_counter()
        if timed:
            k = step - args.warmup
            if every and (k % every == 0 or k == args.steps - 1):
                curve.append((k + 1, loss.detach()))
            t_f, t_b, t_o = t_f + t1 - t0, t_b + t2 - t1, t_o + t3 - t2
    sync()
    total = time.perf_counter() - t_start
    warmup_s = t_start - t_warm0
    out = {
        "loss_eval": loss_eval,
        "tokens_per_s": (src_tok + ntok) * args.steps / total,
        "tgt_tokens_per_s": ntok * args.steps / total,
        "ms_per_update": 1000.0 * total / args.steps,
        "warmup_s": warmup_s,
        "loss_curve": [[u, float(l)] for u, l in curve],
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "precision": args.precision, "compile": args.compile,
    }
    if phases:
        out.update(forward_s=t_f / args.steps, backward_s=t_b / args.steps, optimizer_s=t_o / args.steps)
    if cuda:
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
