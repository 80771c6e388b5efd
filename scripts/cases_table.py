#!/usr/bin/env python3
"""The case B cure table of docs/cases.md from the run dirs scripts/cases.sh
writes: per setting, over its seeds, the spikes >= 10 nats (absolute rule),
the largest jump, the first logged update with a loss below 0.001 bits, and
from the last diag record the parameter norm, the update norm and the probe
tokens' median logit margin. Reads only metrics.jsonl (stdlib only).

  python3 scripts/cases_table.py runs/cases-nzg [PREFIX]
PREFIX: the run dirs' name before "-SETTING-seedN" (default: any).
"""
import math
import os
import re
import sys
from collections import defaultdict

from run_metrics import records

LN2 = math.log(2)


def summarize(run_dir):
    spikes, largest, zero_from, last_diag = 0, 0.0, None, None
    for r in records(run_dir):
        ev = r.get("event")
        if ev == "spike":
            if "abs" in r.get("rule", ""):
                spikes += 1
            largest = max(largest, r.get("jump", 0.0))
        elif ev == "diag":
            last_diag = r
        elif ev is None and "loss" in r and zero_from is None and r["loss"] < 1e-3:
            zero_from = r["update"]
    out = {"spikes": spikes, "largest_nats": largest * LN2, "zero_from": zero_from}
    if last_diag:
        out["update"] = last_diag["update"]
        out["param_norm"] = math.sqrt(sum(x * x for x in last_diag.get("param_norm", [])))
        out["update_norm"] = math.sqrt(sum(x * x for x in last_diag.get("update_norm", [])))
        q = last_diag.get("logit_margin_quantiles", [])
        out["margin"] = q[2] if len(q) == 5 else float("nan")
    return out


def main():
    root = sys.argv[1]
    prefix = sys.argv[2] if len(sys.argv) > 2 else r"[^-]*"
    pat = re.compile("^" + prefix + r"-(.+)-seed(\d+)$")
    rows = defaultdict(dict)
    for name in sorted(os.listdir(root)):
        m = pat.match(name)
        if m and os.path.isfile(os.path.join(root, name, "metrics.jsonl")):
            rows[m.group(1)][int(m.group(2))] = summarize(os.path.join(root, name))
    print("| setting | spikes >= 10 nats, per seed | largest jump (nats) | loss < 0.001 bits from "
          "| at the last diag: parameter norm / update norm / median logit margin (nats), per seed |")
    print("|---|---|---|---|---|")
    for setting, seeds in rows.items():
        ss = [seeds[k] for k in sorted(seeds)]
        fmt = lambda v, f: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)
        print("| {} | {} | {} | {} | {} |".format(
            setting,
            " / ".join(str(s["spikes"]) for s in ss),
            " / ".join(fmt(s["largest_nats"], "{:.0f}") for s in ss),
            " / ".join(fmt(s["zero_from"], "{}") if s["zero_from"] else "never" for s in ss),
            "; ".join("{} / {} / {}".format(fmt(s.get("param_norm"), "{:.3g}"),
                                            fmt(s.get("update_norm"), "{:.2g}"),
                                            fmt(s.get("margin"), "{:.3g}")) for s in ss)))


if __name__ == "__main__":
    main()
