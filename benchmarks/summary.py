"""What run_all.py prints at the end and records as `targets`: the summary table of every part's results,
the speed targets judged on them, and the merge of several runs' bench.json (benchmarks/gpu_check.sh's parts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `benchmarks` as a package, from any working folder

from benchmarks.models import ratios  # noqa: E402

# The speed targets: the transformer models (a row's `transformer`: its model's `is_transformer`) at
# >= 40% MFU in bf16; NAFNet >= 2x a plain fp32 eager loop of the same architecture; GPU utilisation > 90%
# while finetuning (the loop part)
TARGET_MFU, TARGET_NAFNET_OVER_PLAIN, TARGET_GPU_UTIL = 0.40, 2.0, 90.0


def summary_table(result: dict) -> list[str]:
    """The compact table printed at the end: one line per model, then one per other section."""
    lines = ["== summary"]
    if "models" in result:
        m = result["models"]
        cols = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
        lines.append(f"models ({m['profile']} variants, {m['device']}, batch {m['batch']} x {m['size']}^2): "
                     "training img/s | MFU | peak mem")
        lines.append(f"{'model':>17} {'variant':>13} " + " ".join(
            f"{d + (' comp' if c else ' eager'):>11}" for d, c in cols) + f" {'bf16/fp32':>9} {'comp/eager':>10}"
            f" {'MFU best':>8} {'mem':>9}")
        for name in dict.fromkeys(r["model"] for r in m["rows"]):
            rows = {(r["dtype"], r["compiled"]): r for r in m["rows"] if r["model"] == name and not r.get("plain")}
            cells = []
            for key in cols:
                r = rows.get(key)
                cells.append("-" if r is None else f"{r['images_per_s']:.2f}" if r["status"] == "ok" else r["status"])
            ratio = next(x for x in m["ratios"] if x["model"] == name)
            ok = [r for r in rows.values() if r["status"] == "ok"]
            mfu = [r["mfu"] for r in ok if r.get("mfu") is not None]
            mem = [r["peak_mem_gb"] for r in ok if r.get("peak_mem_gb") is not None]
            comp = ratio["compiled/eager bf16"] or ratio["compiled/eager fp32"]
            lines.append(f"{name:>17} {next(iter(rows.values()))['variant']:>13} "
                         + " ".join(f"{c:>11}" for c in cells)
                         + f" {_x(ratio['bf16/fp32 eager']):>9} {_x(comp):>10}"
                         + f" {f'{100 * max(mfu):.1f}%' if mfu else 'n/a':>8}"
                         + f" {f'{max(mem):.2f}GiB' if mem else 'n/a':>9}"
                         + "".join(sorted({f" (at {r['size']}^2)" for r in ok if r.get("size", m["size"]) != m["size"]})))
    if "loader" in result:
        lo = result["loader"]
        lines.append(f"loader ceiling: {lo['ceiling_pairs_per_s_per_core']:.0f} pairs/s per core (uint8 store, "
                     f"{lo['patch']}^2); float store {lo['per_core_pairs_per_s']['store']:.0f}, png "
                     f"{lo['per_core_pairs_per_s']['png']:.0f}; store/png {lo['store_over_png']:.1f}x")
    if "eval" in result:
        ev = result["eval"]
        r = ev["restore_images_per_s"]
        lines.append(f"eval {ev['model']} {ev['variant']} 1280x720 tile {ev['tile']} batch {ev['batch']} "
                     f"({ev['passes_per_image']} pass(es)): restore {r['fp32']:.2f} img/s fp32"
                     + "".join(f", {r[k]:.2f} {k}" for k in ("tf32", "bf16") if r[k] is not None)
                     + " (fp32 by batch: " + ", ".join(f"{b}: {v:.2f}" for b, v in
                                                       ev["restore_images_per_s_fp32_by_batch"].items())
                     + f"); with scoring ({ev['profile_precision']}) {ev['evaluate_images_per_s']:.2f} img/s "
                     f"({ev['device']})")
        lines.append("eval PSNR vs fp32 (benchmark image, untrained weights): "
                     + ", ".join(f"{k} {d:+.4f} dB (RMS {ev['rms_change_levels'][k]:.3f} levels)"
                                 for k, d in ev["psnr_delta_db"].items())
                     + f" (bf16: {ev['bf16_how']})")
    if "loop" in result:
        lp = result["loop"]
        lines.append(f"loop ({lp['profile']} profile, real loader + loop, steady state): img/s | data_wait | "
                     "GPU util | vs sync_every 1 | loop/step")
        for r in lp["rows"]:
            util = f"{r['gpu_util_pct']:.0f}%" if r["gpu_util_pct"] is not None else "n/a"
            lines.append(f"{r['model']:>17} sync {r['sync_every']:>3}: {r['images_per_s']:9.2f} "
                         f"{100 * r['data_wait']:8.1f}% {util:>9} {_x(r['over_sync_every_1']):>8} "
                         f"{_x(r['loop_over_step']):>9}")
    targets = speed_targets(result)
    if targets:
        lines.append("speed targets:")
    for t in targets:
        value = "-" if t["value"] is None else (f"{100 * t['value']:.1f}%" if "MFU" in t["target"] else
                                                f"{t['value']:.1f}%" if "utilisation" in t["target"] else
                                                f"{t['value']:.2f}x")
        verdict = "n/a" if t["pass"] is None else "PASS" if t["pass"] else "FAIL"
        lines.append(f"  {t['target']}: {value} {verdict}" + (f" ({t['why']})" if t["why"] else ""))
    if "orchestration" in result:
        o = result["orchestration"]
        if o.get("status") == "skipped":
            lines.append(f"orchestration: skipped ({o['reason']})")
        for k, v in o.get("verdict", {}).items():
            took = f"{v['seconds']:.2f} s" if v["seconds"] is not None else "failed"
            lines.append(f"{k}: {took} {'PASS' if v['pass'] else 'FAIL'} (target < {o['target_s']:.0f} s)")
        lines += [f"  problem: {p[:300]}" for p in o.get("problems", [])]
    return lines


def speed_targets(result: dict) -> list[dict]:
    """Each of the speed targets (TARGET_* above) that this run measured something for: value, pass (None: not
    measurable here, with why)."""
    out = []
    device = result["meta"]["device"]
    rows = [r for r in result.get("models", {}).get("rows", []) if r["status"] == "ok"]
    for name in dict.fromkeys(r["model"] for r in rows if r.get("transformer")):
        mfu = [r["mfu"] for r in rows if r["model"] == name and r["dtype"] == "bf16" and not r.get("plain")
               and r.get("mfu") is not None]
        out.append({"target": f"{name} bf16 MFU >= {100 * TARGET_MFU:.0f}%", "value": max(mfu) if mfu else None,
                    "pass": max(mfu) >= TARGET_MFU if mfu else None,
                    "why": None if mfu else "no bf16 MFU in this run (a CPU has no honest peak)"})
    plain = [r["images_per_s"] for r in rows if r["model"] == "nafnet" and r.get("plain")]
    best = [r for r in rows if r["model"] == "nafnet" and not r.get("plain")]
    if plain and best:
        top = max(best, key=lambda r: r["images_per_s"])
        ratio = top["images_per_s"] / plain[0]
        how = f"{top['dtype']} {'compiled' if top['compiled'] else 'eager'}"
        out.append({"target": f"nafnet >= {TARGET_NAFNET_OVER_PLAIN:.0f}x a plain fp32 eager loop", "value": ratio,
                    "pass": ratio >= TARGET_NAFNET_OVER_PLAIN if device == "cuda" else None,
                    "why": f"best: {how}" + ("" if device == "cuda" else "; a CPU, not the target's GPU")})
    for r in result.get("loop", {}).get("rows", []):
        if r["sync_every"] == 1:
            continue
        util = r.get("gpu_util_pct")
        out.append({"target": f"{r['model']} GPU utilisation while finetuning > {TARGET_GPU_UTIL:.0f}%",
                    "value": util, "pass": util > TARGET_GPU_UTIL if util is not None else None,
                    "why": None if util is not None else r.get("gpu_util_note")})
    return out


def merge(paths: list[Path]) -> dict:
    """One result from several runs' bench.json (e.g. gpu_check.sh's parts): model rows pooled, a measured
    row preferred over a skipped one of the same model, precision, mode and plain flag; every other section
    from the last file that has it; ratios and targets recomputed across the parts."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    result: dict = {"meta": {**parts[0]["meta"], "merged_from": [str(p) for p in paths]}}
    rows: dict[tuple, dict] = {}
    for part in parts:
        for r in part.get("models", {}).get("rows", []):
            key = (r["model"], r["dtype"], r["compiled"], bool(r.get("plain")))
            if key not in rows or (rows[key]["status"] == "skipped" and r["status"] != "skipped"):
                rows[key] = r
        for name in ("loader", "eval", "loop", "orchestration"):
            if name in part:
                result[name] = part[name]
    models = [p["models"] for p in parts if "models" in p]
    if models:
        merged = list(rows.values())
        result["models"] = {**models[0], "rows": merged, "ratios": ratios(merged), "partial": False}
    result["targets"] = speed_targets(result)
    return result


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"
