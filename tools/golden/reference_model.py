"""Plain-PyTorch pieces of a clinic Transformer, read from the weights of a
clinic TorchScript export (only its parameters and buffers are used, never
its code). Shared by the golden-value generators beside this file."""
import math

import torch
import torch.nn.functional as F


class Weights:
    def __init__(self, path, dtype=None):
        m = torch.jit.load(path)
        self.P = dict(m.named_parameters())
        self.P.update(dict(m.named_buffers()))
        if dtype is not None:
            self.P = {k: v.to(dtype) for k, v in self.P.items()}
        self.d, self.heads = m.d_model, m.heads

    def __call__(self, name):
        return self.P["p_" + name.replace(".", "_")]

    def layers(self):
        """(encoder layers, decoder layers) in the export."""
        n_enc = sum(1 for k in self.P if k.endswith("attn_sublayer_norm_weight") and "encoder" in k)
        n_dec = sum(1 for k in self.P if k.endswith("self_sublayer_norm_weight"))
        return n_enc, n_dec

    def positions(self, tokens):
        """fairseq sinusoidal positions: the i-th real token gets row i + 1, padding row 0."""
        nonpad = (tokens != 0).long()
        return F.embedding(torch.cumsum(nonpad, 1) * nonpad, self("positions.table"))

    def embed(self, tokens):
        """Shared embeddings * sqrt(d) + positions."""
        return F.embedding(tokens, self("encoder_embed.weight")) * math.sqrt(self.d) + self.positions(tokens)

    def attention(self, prefix, q_in, kv_in, key_pad, causal):
        d, H = self.d, self.heads
        dh = d // H
        w, b = self(prefix + ".in_proj_weight"), self(prefix + ".in_proj_bias")
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
        return F.linear(ctx, self(prefix + ".out_proj.weight"), self(prefix + ".out_proj.bias"))

    def ffn(self, prefix, x):
        h = F.relu(F.linear(x, self(prefix + ".fc1.weight"), self(prefix + ".fc1.bias")))
        return F.linear(h, self(prefix + ".fc2.weight"), self(prefix + ".fc2.bias"))

    def encoder_sublayers(self, src_pad):
        """(sublayer prefix, branch function) of every encoder sublayer, in order."""
        subs = []
        for l in range(self.layers()[0]):
            e = "encoder_layers.%d" % l
            subs.append((e + ".attn_sublayer", lambda h, e=e: self.attention(e + ".self_attn", h, h, src_pad, False)))
            subs.append((e + ".ffn_sublayer", lambda h, e=e: self.ffn(e + ".ffn", h)))
        return subs

    def decoder_sublayers(self, enc, src_pad):
        subs = []
        for l in range(self.layers()[1]):
            e = "decoder_layers.%d" % l
            subs.append((e + ".self_sublayer", lambda h, e=e: self.attention(e + ".self_attn", h, h, None, True)))
            subs.append((e + ".cross_sublayer", lambda h, e=e: self.attention(e + ".cross_attn", h, enc, src_pad, False)))
            subs.append((e + ".ffn_sublayer", lambda h, e=e: self.ffn(e + ".ffn", h)))
        return subs
