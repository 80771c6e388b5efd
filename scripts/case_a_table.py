#!/usr/bin/env python3
"""The case A cure table of docs/cases.md from the run dirs scripts/case_a.sh
writes (OUT/tagger-SETTING-seedN): per run, the lowest logged training loss
and where, the last one, the best and last validation loss (bits per target
token), the first diag record where a head of the first encoder layer had
collapsed (the instruments' flag: >= 90 % of the queries on one key), the
first layer's mean and lowest head entropy in the last diag record, and the
median and range of Adam's |m_hat| / |sqrt(v_hat)| over the diag records.
Reads only metrics.jsonl (stdlib only).

  python3 scripts/case_a_table.py runs/case-a
"""
import os
import re
import statistics
import sys

from run_metrics import cell, records


def summarize(run_dir):
    train, valid, diag = [], [], []
    for r in records(run_dir):
        ev = r.get("event")
        if ev is None and isinstance(r.get("loss"), float):
            train.append((r["update"], r["loss"]))
        elif ev == "valid" and isinstance(r.get("valid_loss"), float):
            valid.append((r["update"], r["valid_loss"]))
        elif ev == "diag":
            diag.append(r)
    if not train:
        return None
    low = min(train, key=lambda p: p[1])
    out = {"updates": train[-1][0], "low": low, "last": train[-1][1]}
    if valid:
        out["best_valid"] = min(valid, key=lambda p: p[1])
        out["last_valid"] = valid[-1][1]
    collapse, entropy_last, ratios = None, None, []
    for d in diag:
        flags = d.get("encoder_attn_collapsed") or []
        if collapse is None and flags and any(x >= 1 for x in flags[0]):
            collapse = d["update"]
        ent = d.get("encoder_attn_entropy") or []
        if ent:
            entropy_last = (sum(ent[0]) / len(ent[0]), min(ent[0]))
        q = d.get("adam_first_moment_ratio")
        if isinstance(q, float):
            ratios.append(q)
    out["collapse"] = collapse
    out["entropy_last"] = entropy_last
    out["ratio"] = (statistics.median(ratios), min(ratios), max(ratios)) if ratios else None
    return out


def entropy(e):
    return "-" if e is None else f"{e[0]:.2f} / {e[1]:.2f}"


def ratio(q):
    return "-" if q is None else f"{q[0]:.3f} ({q[1]:.2f}-{q[2]:.2f})"


def main():
    root = sys.argv[1]
    rows = []
    for name in sorted(os.listdir(root)):
        m = re.fullmatch(r"tagger-(.+)-seed(\d+)", name)
        if not m or not os.path.isfile(os.path.join(root, name, "metrics.jsonl")):
            continue
        s = summarize(os.path.join(root, name))
        if s:
            rows.append((m.group(1), int(m.group(2)), s))
    print("| setting | seed | updates | lowest train loss (update) | last train loss | "
          "best valid (update) | last valid | first-layer collapse from | "
          "first-layer head entropy, last diag: mean / lowest (nats) | "
          "Adam m/sqrt(v): median (range) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for setting, seed, s in sorted(rows, key=lambda r: (r[0], r[1])):
        bv = s.get("best_valid")
        print(f"| {setting} | {seed} | {s['updates']} | {s['low'][1]:.2f} ({s['low'][0]}) | "
              f"{s['last']:.2f} | {cell(bv and bv[1])} ({bv[0] if bv else '-'}) | "
              f"{cell(s.get('last_valid'))} | {s['collapse'] if s['collapse'] else 'never'} | "
              f"{entropy(s['entropy_last'])} | {ratio(s['ratio'])} |")


if __name__ == "__main__":
    main()
