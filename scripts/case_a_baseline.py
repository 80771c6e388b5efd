#!/usr/bin/python3
"""Case A's input-independent baselines (docs/cases.md): the validation loss of a
model that ignores its input, for the source-aligned targets clinic trains on
(target pieces + EOS, cut to the source length + 1, as framework/data/corpus.cpp's
source_aligned layout). Two baselines, estimated on train and scored on valid:
the unigram of target pieces, and a unigram per target position.

Usage: python3 scripts/case_a_baseline.py RUN_DIR [DATA_DIR] [CLINIC_SPM]
  RUN_DIR     a case A run dir (its spm.de.model and spm.en.model)
  DATA_DIR    default data/multi30k (train.de/en, val.de/en)
  CLINIC_SPM  default build/bin/clinic-spm
Prints one JSON line: bits and nats per target token of each baseline.
Needs only the Python standard library.
"""
import collections
import json
import math
import os
import subprocess
import sys
import tempfile

EOS, V_SMOOTH = 3, 0.1


def encode(spm, model, text):
    with tempfile.NamedTemporaryFile("r", suffix=".ids") as out:
        subprocess.run([spm, "encode", model, text, out.name], check=True)
        return [list(map(int, line.split())) for line in open(out.name)]


def aligned(src, tgt):
    """(position, target id) pairs as the source_aligned batches hold them."""
    pairs = []
    for s, t in zip(src, tgt):
        t = t + [EOS]
        pairs.extend((i, t[i]) for i in range(min(len(s) + 1, len(t))))
    return pairs


def main():
    run = sys.argv[1]
    data = sys.argv[2] if len(sys.argv) > 2 else "data/multi30k"
    spm = sys.argv[3] if len(sys.argv) > 3 else "build/bin/clinic-spm"
    split = {s: aligned(encode(spm, os.path.join(run, "spm.de.model"), os.path.join(data, s + ".de")),
                        encode(spm, os.path.join(run, "spm.en.model"), os.path.join(data, s + ".en")))
             for s in ("train", "val")}
    V = sum(1 for _ in open(os.path.join(run, "spm.en.vocab")))
    uni = collections.Counter(t for _, t in split["train"])
    n = sum(uni.values())
    # Add-0.1 smoothing: a valid piece never seen in train keeps a finite cost.
    h_uni = -sum(math.log((uni[t] + V_SMOOTH) / (n + V_SMOOTH * V)) for _, t in split["val"])
    by_pos = collections.defaultdict(collections.Counter)
    for i, t in split["train"]:
        by_pos[i][t] += 1
    totals = {i: sum(c.values()) for i, c in by_pos.items()}
    h_pos = 0.0
    for i, t in split["val"]:
        # A position never seen in train falls back to the unigram.
        c, total = (by_pos[i], totals[i]) if i in totals else (uni, n)
        h_pos -= math.log((c[t] + V_SMOOTH) / (total + V_SMOOTH * V))
    m = len(split["val"])
    print(json.dumps({"valid_target_tokens": m, "vocab": V,
                      "unigram_bits": round(h_uni / m / math.log(2), 3),
                      "unigram_nats": round(h_uni / m, 3),
                      "position_unigram_bits": round(h_pos / m / math.log(2), 3),
                      "position_unigram_nats": round(h_pos / m, 3)}))


if __name__ == "__main__":
    main()
