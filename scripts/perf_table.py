#!/usr/bin/env python3
"""The table of scripts/gpu-check.sh perf (issue 33 item 5).

Usage: perf_table.py PERF_DIR MACHINE_TXT
PERF_DIR holds SYSTEM-TOKENS-PRECISION.json (one JSON object each: clinic bench
--json, or tools/bench/reference_train.py) and curve-SYSTEM.json. MFU of every
row uses clinic's analytic FLOPs per update and clinic's measured GEMM peak
of that precision (the same model and batch shape on every side). Prints the
table and the target checks; writes PERF_DIR/../perf.json.
"""
import glob
import json
import os
import sys

SYSTEMS = ["clinic", "clinic_device", "clinic_graph", "torch_eager", "torch_compile", "torch_autotune"]


def load(path):
    try:
        with open(path) as f:
            text = f.read().strip().splitlines()
        return json.loads(text[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None


def main():
    pdir, machine = sys.argv[1], sys.argv[2]
    device = "unknown"
    if os.path.exists(machine):
        lines = open(machine).read().splitlines()
        if len(lines) > 1:
            device = lines[1].split(",")[0].strip()
    rows, by = [], {}
    for path in sorted(glob.glob(os.path.join(pdir, "*-*-*.json"))):
        system, tokens, prec = os.path.basename(path)[:-5].rsplit("-", 2)
        by[(system, int(tokens), prec)] = load(path)
    keys = sorted({(t, p) for (_, t, p) in by}, key=lambda k: (k[0], ["fp32", "bf16", "fp16"].index(k[1])))
    print(f"device: {device}")
    print(f"{'tokens':>6} {'prec':5} {'system':15} {'tokens/s':>10} {'ms/update':>10} {'MFU':>7}"
          f" {'peak MiB':>9} {'last loss':>9}")
    for tokens, prec in keys:
        ref = by.get(("clinic", tokens, prec)) or by.get(("clinic_device", tokens, prec)) or {}
        flops, peak = ref.get("flops_per_update"), ref.get("gemm_peak_gflops")
        for system in SYSTEMS:
            if (system, tokens, prec) not in by:
                continue
            r = by[(system, tokens, prec)]
            if r is None:
                print(f"{tokens:>6} {prec:5} {system:15} {'failed or timed out':>30}")
                rows.append({"system": system, "tokens": tokens, "precision": prec, "failed": True})
                continue
            ms = r.get("ms_per_update") or 1000.0 / r["updates_per_s"]
            mfu = flops / (ms / 1000.0) / 1e9 / peak if flops and peak else float("nan")
            mem = r.get("device_peak_memory_mb", r.get("peak_memory_mb", float("nan")))
            curve = r.get("loss_curve") or []
            last = curve[-1][1] if curve else r.get("loss", float("nan"))
            print(f"{tokens:>6} {prec:5} {system:15} {r['tokens_per_s']:>10.0f} {ms:>10.2f}"
                  f" {100 * mfu:>6.2f}% {mem:>9.0f} {last:>9.4f}")
            rows.append({"system": system, "tokens": tokens, "precision": prec,
                         "tokens_per_s": r["tokens_per_s"], "ms_per_update": ms, "mfu": mfu,
                         "peak_memory_mb": mem, "last_loss": last,
                         "warmup_s": r.get("warmup_s")})

    def value(key, system, tokens, prec):
        for row in rows:
            if (row["system"], row["tokens"], row["precision"]) == (system, tokens, prec) and key in row:
                return row[key]
        return None

    def tps(system, tokens, prec):
        return value("tokens_per_s", system, tokens, prec)

    checks = []

    def ratio(name, a, b, target):
        if a is None or b is None:
            checks.append((name, None, target))
        else:
            checks.append((name, a / b, target))

    for fast in ("clinic_device", "clinic_graph"):
        ratio(f"4096 bf16: {fast} / clinic (today)", tps(fast, 4096, "bf16"),
              tps("clinic", 4096, "bf16"), 4.0)
        ratio(f"4096 bf16: {fast} / torch_eager", tps(fast, 4096, "bf16"),
              tps("torch_eager", 4096, "bf16"), 2.0)
        ratio(f"4096 bf16: {fast} / torch_compile", tps(fast, 4096, "bf16"),
              tps("torch_compile", 4096, "bf16"), 1.2)
        ratio(f"32768 bf16 / fp32 ({fast})", tps(fast, 32768, "bf16"),
              tps(fast, 32768, "fp32"), 1.8)
        checks.append((f"32768 bf16: {fast} MFU", value("mfu", fast, 32768, "bf16"), 0.35))
    print("targets (issue 33):")
    for name, value, target in checks:
        verdict = "n/a" if value is None else ("met" if value >= target else "NOT met")
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  {name}: {shown} (target >= {target}) {verdict}")
    curves = {}
    for system in ("clinic_device", "clinic_graph", "torch_eager"):
        r = load(os.path.join(pdir, f"curve-{system}.json"))
        curves[system] = dict((int(u), l) for u, l in (r or {}).get("loss_curve", []))
    worst = None
    b = curves["torch_eager"]
    for system in ("clinic_device", "clinic_graph"):
        a = curves[system]
        common = sorted(set(a) & set(b))
        if not common:
            print(f"loss curves: {system} or torch_eager missing")
            continue
        w = max(abs(a[u] - b[u]) / b[u] for u in common)
        worst = w if worst is None else max(worst, w)
        print(f"loss curves (bf16, 300 updates): {system} {a[common[0]]:.3f} -> {a[common[-1]]:.3f},"
              f" torch_eager {b[common[0]]:.3f} -> {b[common[-1]]:.3f};"
              f" largest relative difference {w:.4f} (target <= 0.01:"
              f" {'met' if w <= 0.01 else 'NOT met'}; different dropout masks and batches)")
    out = {"device": device, "rows": rows,
           "targets": [{"check": n, "value": v, "target": t} for n, v, t in checks],
           "curves": {k: sorted(v.items()) for k, v in curves.items()}, "curve_max_rel_diff": worst}
    path = os.path.join(os.path.dirname(os.path.abspath(pdir)), "perf.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
