#!/usr/bin/env python3
"""Self-test of scripts/kernel_trace.py on a hand-made trace whose numbers are known: segment
choice (the busiest), wall / busy / idle time with overlapping work, the gap histogram, the
largest gap with the runtime call inside it, and kernels by time. Run by ctest
(kernel_trace_summary); prints PASS or raises."""
import json
import os
import subprocess
import sys
import tempfile

US = 1000  # ns


def write_trace(path):
    rows = []

    def k(name, s, e):
        rows.append({"k": "kernel", "s": s * US, "e": e * US, "st": 7, "g": 1, "b": 32, "n": name})

    # segment 0 (light): one 50 us kernel
    k("light", 0, 50)
    # 10 ms later, segment 1 (the busiest): 0-100 a, 98-150 b overlapping a by 2 us, gap 3 us,
    # 153-253 a, gap 47 us holding a synchronisation, 300-400 a copy, gap 0.5 ms, 900-1000 c
    t = 10_000
    k("void lizard::cuda::a_kernel<float>(int)", t + 0, t + 100)
    k("b_kernel", t + 98, t + 150)
    k("void lizard::cuda::a_kernel<float>(int)", t + 153, t + 253)
    rows.append({"k": "api", "s": (t + 260) * US, "e": (t + 290) * US, "n": "cudaStreamSynchronize_v3020"})
    rows.append({"k": "memcpy", "s": (t + 300) * US, "e": (t + 400) * US, "st": 7, "bytes": 4096, "kind": 2})
    k("c_kernel", t + 900, t + 1000)
    rows.append({"k": "summary", "quiet_api_calls": 5})
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.jsonl")
        write_trace(path)
        out = subprocess.run([sys.executable, os.path.join(here, "kernel_trace.py"), path, "--json",
                              "--min-ms", "0.01", "--split-ms", "2", "--steps", "1"],
                             capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    assert r["segments_found"] == 2 and r["quiet_api_calls"] == 5, r
    st = r["steps"][0]
    assert st["segment"] == 1, st["segment"]
    # wall 0 -> 1000 us; busy: a 100 + b's 50 beyond a + a 100 + copy 100 + c 100 = 450 us
    assert abs(st["wall_ms"] - 1.0) < 1e-9 and abs(st["busy_ms"] - 0.45) < 1e-9, st
    assert abs(st["idle_ms"] - 0.55) < 1e-9 and st["gpu_ops"] == 5, st
    hist = {h["gap_us"]: (h["count"], h["total_ms"]) for h in st["gaps"]}
    assert hist["0-5"] == (1, 0.003) and hist["20-100"] == (1, 0.047) and hist["100-1000"] == (1, 0.5), hist
    big = st["largest_gaps"]
    assert big[0]["us"] == 500.0 and big[0]["before"] == "c_kernel" and big[0]["api"] == [], big[0]
    assert big[1]["us"] == 47.0 and big[1]["api"] == ["cudaStreamSynchronize_v3020"], big[1]
    assert big[1]["after"] == "a_kernel<float>" and big[1]["before"].startswith("memcpy D2H 4096"), big[1]
    kern = {name: (ms, n) for name, ms, n in st["kernels"]}
    assert kern["a_kernel<float>"] == (0.2, 2) and kern["b_kernel"] == (0.052, 1), kern
    print("PASS kernel_trace.py summary")


if __name__ == "__main__":
    main()
