#!/usr/bin/python3
"""Independent re-implementation of two of clinic's stability instruments.

Usage: /usr/bin/python3 tools/golden/stability_golden.py VARIANT W.pt W2.pt SRC TGT
  VARIANT   post_ln or pre_ln
  W.pt      a clinic TorchScript export (weights W); only its weights are used,
            through plain PyTorch ops (no clinic code)
  W2.pt     the same model after a change of weights (W*)
  SRC, TGT  token rows as Python literals (TGT is the decoder input, BOS first)
Prints one JSON object:
  <stack>_dependency      beta_{i,i} at W for every sublayer of the stack
  <stack>_output_change   for i = 0 .. n-1 the sublayer input x_i (0 = embeddings),
                          then the stack output: mean over real tokens of
                          |s(W) - s(W*)|^2
The dependency (Liu et al. 2020, Transformer-Clinic --plot_variance): the stack
state is a sum of components, a_0 = embeddings, a_i = f_i(.) branch outputs.
Pre-LN adds a_i. Post-LN adds a_i, then the LayerNorm acts on each component
per position as gamma * (c - mean(c)) / sigma(sum), sigma over d of the whole
sum (population, + eps). beta_{i,j} = Std[c_j] / sqrt(sum_k Std[c_k]^2), taken
over real tokens; the dependency is the newest component's beta.
Eval mode: no dropout. Float64.
"""
import ast
import json
import math
import sys

import torch
import torch.nn.functional as F

from reference_model import Weights


def run(model_path, variant, src, tgt):
    W = Weights(model_path, torch.float64)
    d, pre = W.d, variant == "pre_ln"

    def ln(x, prefix):
        return F.layer_norm(x, (d,), W(prefix + ".weight"), W(prefix + ".bias"), 1e-5)

    def run_stack(x, sublayers, keep, final_norm):
        rows = lambda t: t[keep]  # [N, d] real tokens
        states, comps, deps = [], [rows(x)], []
        for norm_prefix, fn in sublayers:
            states.append(rows(x))
            if pre:
                fx = fn(ln(x, norm_prefix + ".norm"))
                comps.append(rows(fx))
                x = x + fx
            else:
                fx = fn(x)
                comps.append(rows(fx))
                b = rows(x + fx)
                sigma = (b.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
                gamma = W(norm_prefix + ".norm.weight")
                comps = [gamma * (c - c.mean(1, keepdim=True)) / sigma for c in comps]
                x = ln(x + fx, norm_prefix + ".norm")
            stds = [float(c.std(unbiased=False)) for c in comps]
            deps.append(stds[-1] / math.sqrt(sum(s * s for s in stds)))
        if pre:
            x = ln(x, final_norm)
        states.append(rows(x))
        return x, states, deps

    src_pad = src == 0
    enc, enc_states, enc_deps = run_stack(W.embed(src), W.encoder_sublayers(src_pad), src != 0,
                                          "encoder_norm")
    _, dec_states, dec_deps = run_stack(W.embed(tgt), W.decoder_sublayers(enc, src_pad), tgt != 0,
                                        "decoder_norm")
    return {"encoder": (enc_states, enc_deps), "decoder": (dec_states, dec_deps)}


def main():
    variant, w1, w2 = sys.argv[1], sys.argv[2], sys.argv[3]
    src = torch.tensor(ast.literal_eval(sys.argv[4]))
    tgt = torch.tensor(ast.literal_eval(sys.argv[5]))
    a, b = run(w1, variant, src, tgt), run(w2, variant, src, tgt)
    out = {}
    for stack in ("encoder", "decoder"):
        sa, deps = a[stack]
        sb, _ = b[stack]
        out[stack + "_dependency"] = deps
        out[stack + "_output_change"] = [float((x - y).pow(2).sum(1).mean()) for x, y in zip(sa, sb)]
    print(json.dumps(out))


if __name__ == "__main__":
    with torch.no_grad():
        main()
