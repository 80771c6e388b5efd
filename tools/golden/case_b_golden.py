#!/usr/bin/python3
"""Case B's model as the reference program builds it (scripts/case_b_reference.py,
plain PyTorch, no clinic code), run on clinic's weights.

Usage: /usr/bin/python3 tools/golden/case_b_golden.py PARAMS.pt
  PARAMS.pt  torch::pickle_save of clinic's CausalLm named parameters (its
             embedding and head hold the toy's 2 tokens; clinic feeds them as
             ids 4 and 5 and puts -1e9 at its special ids 0-3)
Prints one JSON object for the toy batch (input [[1,0],[0,1]], target 1 - input),
in eval mode (no dropout): "logits" [2][2][2] over the two tokens, "loss" (mean
cross-entropy, nats) and "grad_norm" (global L2 norm of the loss's gradient over
the reference's parameters), and "loss_ls01", "grad_norm_ls01" with label
smoothing 0.1.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from case_b_reference import Toy  # noqa: E402


def main():
    P = torch.load(sys.argv[1])
    model = Toy()
    model.eval()
    q, k, v = P["layers.0.self_attn.in_proj_weight"].chunk(3, 0)
    qb, kb, vb = P["layers.0.self_attn.in_proj_bias"].chunk(3, 0)
    mine = {
        "tok.weight": P["tokens.weight"], "pos.weight": P["positions.weight"],
        "ln.weight": P["embed_norm.weight"], "ln.bias": P["embed_norm.bias"],
        "layers.0.q.weight": q, "layers.0.q.bias": qb,
        "layers.0.k.weight": k, "layers.0.k.bias": kb,
        "layers.0.v.weight": v, "layers.0.v.bias": vb,
        "layers.0.o.weight": P["layers.0.self_attn.out_proj.weight"],
        "layers.0.o.bias": P["layers.0.self_attn.out_proj.bias"],
        "layers.0.ln1.weight": P["layers.0.attn_sublayer.norm.weight"],
        "layers.0.ln1.bias": P["layers.0.attn_sublayer.norm.bias"],
        "layers.0.fc1.weight": P["layers.0.ffn.fc1.weight"], "layers.0.fc1.bias": P["layers.0.ffn.fc1.bias"],
        "layers.0.fc2.weight": P["layers.0.ffn.fc2.weight"], "layers.0.fc2.bias": P["layers.0.ffn.fc2.bias"],
        "layers.0.ln2.weight": P["layers.0.ffn_sublayer.norm.weight"],
        "layers.0.ln2.bias": P["layers.0.ffn_sublayer.norm.bias"],
        "head.weight": P["head.weight"], "head.bias": P["head.bias"],
    }
    model.load_state_dict(mine, strict=True)
    ids = torch.tensor([[1, 0], [0, 1]])
    logits = model(ids)
    out = {"logits": logits.tolist()}
    # Plain cross-entropy, and with label smoothing 0.1 (torch's: eps/C to each
    # of the C = 2 classes, the reference's --label-smoothing).
    for key, eps in (("", 0.0), ("_ls01", 0.1)):
        model.zero_grad()
        loss = F.cross_entropy(model(ids).reshape(-1, 2), (1 - ids).reshape(-1),
                               label_smoothing=eps)
        loss.backward()
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
        out["loss" + key], out["grad_norm" + key] = loss.item(), norm.item()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
