#!/usr/bin/env python3
"""Where a traced run's GPU time goes and where the GPU waits (scripts/kernel_trace.sh writes
the trace: one JSON line per kernel, copy, memset and stalling runtime call, from
scripts/kernel_trace/kernel_trace.cpp).

The timeline is cut into segments at GPU-idle gaps of at least --split-ms (a benchmark's
steps are separated by host work and synchronisations); the --steps segments with the most
GPU-busy time are the steps (reported in time order). For each: wall time, GPU-busy time, the idle gaps by size, the
largest gaps with the GPU work on either side and the runtime calls inside them, and the
kernels by total time. Prints JSON with --json, text otherwise."""
import argparse
import collections
import json
import re
import sys


def short(name, width=60):
    n = re.sub(r"\(.*$", "", name or "?")
    n = n.replace("void ", "").replace("lizard::cuda::", "").replace("lizard_detail::", "")
    n = n.replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    return n[:width]


def load(path):
    gpu, api, summary = [], [], {}
    with open(path) as f:
        lines = f.read().splitlines()
    for no, line in enumerate(lines, 1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            # a traced process that dies is not flushed to the end: its last line is cut
            if no == len(lines):
                print("%s: line %d is cut off (did the traced process exit normally?); "
                      "skipped" % (path, no), file=sys.stderr)
                continue
            sys.exit("%s: line %d is not a trace record (JSON): %.80s" % (path, no, line))
        k = r["k"]
        if k == "summary":
            summary = r
        elif k == "api":
            api.append(r)
        else:
            if k == "memcpy":
                r["n"] = "memcpy %s %d B" % ({1: "H2D", 2: "D2H", 8: "D2D"}.get(r.get("kind"), "?"), r["bytes"])
            elif k == "memset":
                r["n"] = "memset %d B" % r["bytes"]
            gpu.append(r)
    gpu.sort(key=lambda r: r["s"])
    api.sort(key=lambda r: r["s"])
    return gpu, api, summary


def segments(gpu, split_ns):
    segs, cur, end = [], [], None
    for r in gpu:
        if cur and r["s"] - end >= split_ns:
            segs.append(cur)
            cur = []
        if not cur:
            end = r["e"]
        cur.append(r)
        end = max(end, r["e"])
    if cur:
        segs.append(cur)
    return segs


def analyse(seg, api, top):
    t0, t1 = seg[0]["s"], max(r["e"] for r in seg)
    busy, gaps, end, prev = 0, [], seg[0]["s"], None
    by_kernel = collections.defaultdict(lambda: [0, 0])
    for r in seg:
        if r["s"] > end:
            gaps.append((r["s"] - end, prev, r, end))
        busy += max(0, r["e"] - max(r["s"], end))
        if r["e"] > end:
            end, prev = r["e"], r
        bk = by_kernel[short(r["n"], 80)]
        bk[0] += r["e"] - r["s"]
        bk[1] += 1
    bins = [(0, 5e3), (5e3, 20e3), (20e3, 100e3), (100e3, 1e6), (1e6, 1e18)]
    hist = []
    for lo, hi in bins:
        g = [x[0] for x in gaps if lo <= x[0] < hi]
        hist.append({"gap_us": "%g-%g" % (lo / 1e3, hi / 1e3) if hi < 1e17 else ">%g" % (lo / 1e3),
                     "count": len(g), "total_ms": round(sum(g) / 1e6, 3)})
    in_gap = collections.defaultdict(lambda: [0, 0])
    biggest = []
    for dur, p, n, start in sorted(gaps, key=lambda x: -x[0]):
        calls = [a["n"] for a in api if a["s"] < start + dur and a["e"] > start]
        for c in set(calls):
            in_gap[c][0] += dur
            in_gap[c][1] += 1
        if len(biggest) < top:
            biggest.append({"us": round(dur / 1e3, 1), "after": short(p["n"]) if p else None,
                            "before": short(n["n"]), "api": sorted(set(calls))[:6]})
    after_kernel = collections.defaultdict(lambda: [0, 0])
    for dur, p, n, _ in gaps:
        key = short(n["n"])
        after_kernel[key][0] += dur
        after_kernel[key][1] += 1
    return {
        "wall_ms": round((t1 - t0) / 1e6, 3),
        "busy_ms": round(busy / 1e6, 3),
        "idle_ms": round((t1 - t0 - busy) / 1e6, 3),
        "gpu_ops": len(seg),
        "gaps": hist,
        "largest_gaps": biggest,
        "idle_by_api_call_inside": sorted(([k, round(v[0] / 1e6, 3), v[1]] for k, v in in_gap.items()),
                                          key=lambda x: -x[1])[:12],
        "idle_before_kernel": sorted(([k, round(v[0] / 1e6, 3), v[1]] for k, v in after_kernel.items()),
                                     key=lambda x: -x[1])[:top],
        "kernels": sorted(([k, round(v[0] / 1e6, 3), v[1]] for k, v in by_kernel.items()),
                          key=lambda x: -x[1])[:top],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--split-ms", type=float, default=2.0, help="idle gap that ends a segment")
    ap.add_argument("--min-ms", type=float, default=5.0, help="shortest segment counted as a step")
    ap.add_argument("--steps", type=int, default=1, help="how many segments to report (the busiest)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    gpu, api, summary = load(a.trace)
    if not gpu:
        sys.exit("kernel_trace.py: %s holds no GPU activity (was the tracer loaded?)" % a.trace)
    segs = [s for s in segments(gpu, a.split_ms * 1e6) if (max(r["e"] for r in s) - s[0]["s"]) >= a.min_ms * 1e6]
    if not segs:
        sys.exit("kernel_trace.py: no segment of at least %g ms" % a.min_ms)
    def busy(seg):
        return sum(r["e"] - r["s"] for r in seg)
    chosen = sorted(sorted(range(len(segs)), key=lambda i: -busy(segs[i]))[:a.steps])
    out = {"segments_found": len(segs), "quiet_api_calls": summary.get("quiet_api_calls"),
           "steps": [dict(segment=i, **analyse(segs[i], api, a.top)) for i in chosen]}
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print("%d segments of >= %g ms (split at idle >= %g ms)" % (len(segs), a.min_ms, a.split_ms))
    for st in out["steps"]:
        print("\n== segment %d: wall %.2f ms, GPU busy %.2f ms, idle %.2f ms, %d GPU ops" %
              (st["segment"], st["wall_ms"], st["busy_ms"], st["idle_ms"], st["gpu_ops"]))
        print("idle gaps:", ", ".join("%s us: %d (%.2f ms)" % (h["gap_us"], h["count"], h["total_ms"]) for h in st["gaps"]))
        print("largest gaps:")
        for g in st["largest_gaps"]:
            print("  %8.1f us  after %-45s before %-45s %s" % (g["us"], g["after"], g["before"], ",".join(g["api"])))
        print("idle by runtime call inside the gap:")
        for k, ms, n in st["idle_by_api_call_inside"]:
            print("  %8.3f ms %5d  %s" % (ms, n, k))
        print("idle before kernel:")
        for k, ms, n in st["idle_before_kernel"]:
            print("  %8.3f ms %5d  %s" % (ms, n, k))
        print("kernels by time:")
        for k, ms, n in st["kernels"]:
            print("  %8.3f ms %5d  %s" % (ms, n, k))


if __name__ == "__main__":
    main()
