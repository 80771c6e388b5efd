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

from reference_model import Weights


def main():
    W = Weights(sys.argv[1])
    src = torch.tensor(ast.literal_eval(sys.argv[2]))
    tgt = torch.tensor(ast.literal_eval(sys.argv[3]))
    omegas = []

    def run_stack(x, sublayers):
        r = 1.0
        for norm_prefix, fn in sublayers:
            w = r
            omegas.append(w)
            fx = fn(x)
            r = math.sqrt(float((x * w).var(unbiased=False)) + float(fx.var(unbiased=False)))
            x = F.layer_norm(x * w + fx, (W.d,), W(norm_prefix + ".norm.weight"),
                             W(norm_prefix + ".norm.bias"), 1e-5)
        return x

    src_pad = src == 0
    enc = run_stack(W.embed(src), W.encoder_sublayers(src_pad))
    run_stack(W.embed(tgt), W.decoder_sublayers(enc, src_pad))
    for w in omegas:
        print(repr(w))


if __name__ == "__main__":
    with torch.no_grad():
        main()
