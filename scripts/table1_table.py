#!/usr/bin/env python3
"""The Table 1 rows of docs/analysis.md section 2 from the run dirs
scripts/table1.sh writes (OUT/postpost, OUT/postpre, OUT/prepre): per run the
last and lowest logged training loss, the validation loss (bits per target
token) at each validation, and from the last diag record the amplification
index of each stack (sum beta_ii^2 / (1 + ln n), docs/diagnose.md) and its
first layer's gradient norm over its largest layer's; then, where
scripts/table1.sh has translated the validation set with the last checkpoint
(OUT/NAME.bleu, OUT/NAME.val-real.hyp), the greedy BLEU with the real and with
the rotated sources and how many distinct translations the model gave for the
1,014 sentences. Reads only run files (stdlib only).

  python3 scripts/table1_table.py runs/table1-adam-3e-3-x4
"""
import math
import os
import sys

from run_metrics import cell, records

NAMES = {"postpost": "Post-LN / Post-LN", "postpre": "Post-LN / Pre-LN",
         "prepre": "Pre-LN / Pre-LN"}


def amplification(d, stack):
    dep = d.get(stack + "_dependency") or []
    return sum(b * b for b in dep) / (1 + math.log(len(dep))) if dep else None


def grad_ratio(d, stack):
    g = d.get(stack + "_layer_grad_norm") or []
    return g[0] / max(g) if g and max(g) > 0 else None


def summarize(run_dir):
    train, valid, last_diag = [], [], None
    for r in records(run_dir):
        ev = r.get("event")
        if ev is None and isinstance(r.get("loss"), (int, float)):
            train.append((r["update"], r["loss"]))
        elif ev == "valid" and isinstance(r.get("valid_loss"), (int, float)):
            valid.append((r["update"], r["valid_loss"]))
        elif ev == "diag":
            last_diag = r
    if not train:
        return None
    return {"train": train, "valid": valid, "diag": last_diag}


def translations(root, name):
    """(BLEU with real sources, BLEU with rotated ones, distinct hypotheses,
    sentences) from scripts/table1.sh's eval files, or None."""
    bleu = {}
    try:
        with open(os.path.join(root, name + ".bleu")) as f:
            for line in f:
                src, _, rest = line.partition(": BLEU = ")
                if rest:
                    bleu[src] = float(rest.split()[0])
        with open(os.path.join(root, name + ".val-real.hyp")) as f:
            hyps = f.read().splitlines()
    except OSError:
        return None
    return bleu.get("real"), bleu.get("rotated"), len(set(hyps)), len(hyps)


def main():
    root = sys.argv[1]
    print("| encoder / decoder | updates | train loss, last (lowest) | valid loss at each validation "
          "| amplification index enc / dec | layer-1 / largest grad enc / dec "
          "| valid BLEU (greedy), real / rotated sources | distinct translations |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label in NAMES.items():
        run = os.path.join(root, name)
        if not os.path.isfile(os.path.join(run, "metrics.jsonl")):
            continue
        s = summarize(run)
        if not s:
            continue
        last = s["train"][-1]
        low = min(l for _, l in s["train"])
        valid = " / ".join(f"{v:.2f} ({u})" for u, v in s["valid"]) or "-"
        d = s["diag"] or {}
        t = translations(root, name)
        bleu = f"{cell(t[0], '.2f')} / {cell(t[1], '.2f')}" if t else "-"
        distinct = f"{t[2]} of {t[3]}" if t else "-"
        print(f"| {label} | {last[0]} | {last[1]:.2f} ({low:.2f}) | {valid} | "
              f"{cell(amplification(d, 'encoder'), '.2f')} / {cell(amplification(d, 'decoder'), '.2f')} | "
              f"{cell(grad_ratio(d, 'encoder'), '.1e')} / {cell(grad_ratio(d, 'decoder'), '.1e')} | "
              f"{bleu} | {distinct} |")


if __name__ == "__main__":
    main()
