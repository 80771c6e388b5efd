#!/usr/bin/python3
"""Independent re-implementation of Transformer-Clinic's Admin profiling.

Usage: /usr/bin/python3 tools/golden/admin_profile.py MODEL.pt SRC TGT
  MODEL.pt  a clinic TorchScript export of an *unprofiled* Post-LN-shaped model
            (omega = 1); only its weights are used, through plain PyTorch ops.
  SRC, TGT  token rows as Python literals, e.g. "[[5, 6, 3], [7, 3, 0]]".
Prints the profiled omega of every sublayer (encoder first), one per line.

The recursion (fairseq/modules/transformer_layer.py, 'adaptive-profiling'):
per stack a running value r = 1; before sublayer k, omega_k := r; then
r <- sqrt(Var(omega_k * x) + Var(f_k(x))) over all elements (padding
included, population variance); the sublayer output is LN(omega_k x + f_k(x)).
Run in train mode with dropout 0 so the forward is deterministic.
"""
import ast
import math
import sys

import torch
import torch.nn.functional as F


def main():
    m = torch.jit.load(sys.argv[1])
    src = torch.tensor(ast.literal_eval(sys.argv[2]))
    tgt = torch.tensor(ast.literal_eval(sys.argv[3]))
    P = dict(m.named_parameters())
    P.update(dict(m.named_buffers()))
    d, H = m.d_model, m.heads
    dh = d // H

    def p(name):
        return P["p_" + name.replace(".", "_")]

    def positions(tokens):
        nonpad = (tokens != 0).long()
        return F.embedding(torch.cumsum(nonpad, 1) * nonpad, p("positions.table"))

    def attention(prefix, q_in, kv_in, key_pad, causal):
        w, b = p(prefix + ".in_proj_weight"), p(prefix + ".in_proj_bias")
        B, T, S = q_in.size(0), q_in.size(1), kv_in.size(1)
        q = F.linear(q_in, w[:d], b[:d]).view(B, T, H, dh).transpose(1, 2) / math.sqrt(dh)
        k = F.linear(kv_in, w[d:2 * d], b[d:2 * d]).view(B, S, H, dh).transpose(1, 2)
        v = F.linear(kv_in, w[2 * d:], b[2 * d:]).view(B, S, H, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2)
        if key_pad is not None:
            scores = scores.masked_fill(key_pad[:, None, None, :], float("-inf"))
        if causal:
            scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(1), float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
        return F.linear(ctx, p(prefix + ".out_proj.weight"), p(prefix + ".out_proj.bias"))

    def ffn(prefix, x):
        h = F.relu(F.linear(x, p(prefix + ".fc1.weight"), p(prefix + ".fc1.bias")))
        return F.linear(h, p(prefix + ".fc2.weight"), p(prefix + ".fc2.bias"))

    omegas = []

    def run_stack(x, sublayers):
        r = 1.0
        for norm_prefix, fn in sublayers:
            w = r
            omegas.append(w)
            fx = fn(x)
            r = math.sqrt(float((x * w).var(unbiased=False)) + float(fx.var(unbiased=False)))
            x = F.layer_norm(x * w + fx, (d,), p(norm_prefix + ".norm.weight"),
                             p(norm_prefix + ".norm.bias"), 1e-5)
        return x

    n_enc = sum(1 for k in P if k.endswith("attn_sublayer_norm_weight") and "encoder" in k)
    n_dec = sum(1 for k in P if k.endswith("self_sublayer_norm_weight"))
    scale = math.sqrt(d)
    src_pad = src == 0
    x = F.embedding(src, p("encoder_embed.weight")) * scale + positions(src)
    enc_subs = []
    for l in range(n_enc):
        e = "encoder_layers.%d" % l
        enc_subs.append((e + ".attn_sublayer", lambda h, e=e: attention(e + ".self_attn", h, h, src_pad, False)))
        enc_subs.append((e + ".ffn_sublayer", lambda h, e=e: ffn(e + ".ffn", h)))
    enc = run_stack(x, enc_subs)
    y = F.embedding(tgt, p("encoder_embed.weight")) * scale + positions(tgt)
    dec_subs = []
    for l in range(n_dec):
        e = "decoder_layers.%d" % l
        dec_subs.append((e + ".self_sublayer", lambda h, e=e: attention(e + ".self_attn", h, h, None, True)))
        dec_subs.append((e + ".cross_sublayer", lambda h, e=e: attention(e + ".cross_attn", h, enc, src_pad, False)))
        dec_subs.append((e + ".ffn_sublayer", lambda h, e=e: ffn(e + ".ffn", h)))
    run_stack(y, dec_subs)
    for w in omegas:
        print(repr(w))


if __name__ == "__main__":
    with torch.no_grad():
        main()
