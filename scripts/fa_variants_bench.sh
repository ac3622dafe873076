#!/usr/bin/env bash
# Times every flash-attention forward kernel variant (LIZARD_FA_FWD_VARIANT, see
# include/lizard/cuda/flash_attention.h) and torch SDPA (flash backend) in one call on one GPU,
# and prints one line per variant and shape: the median forward ms and its ratio to SDPA's.
#
# `lizard bench ops` times every variant (rows flash_attention_fwd_v<N>) and the default
# (flash_attention_fwd) at B=8,T=2048 and B=2,T=8192 (H=32, Hkv=8, D=128, bf16, causal);
# scripts/bench_attention_torch.py times SDPA at the same shapes. Run from the repository root
# on the GPU machine after the build:
#   scripts/fa_variants_bench.sh [path/to/lizard] [iters]
# Environment: ROUNDS (default 1: more rounds repeat the bench against clock drift and print
# each run).
set -euo pipefail

LIZARD=${1:-build/bin/lizard}
ITERS=${2:-30}
ROUNDS=${ROUNDS:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

[ -x "$LIZARD" ] || { echo "fa_variants_bench: no lizard binary at $LIZARD (build first)" >&2; exit 2; }

python3 "$HERE/bench_attention_torch.py" > "$OUT/torch.jsonl"
for r in $(seq 1 "$ROUNDS"); do
  "$LIZARD" bench ops --iters "$ITERS" > "$OUT/ops_r${r}.json"
done

python3 - "$OUT" "$ROUNDS" <<'EOF'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
sdpa = {}
for line in open(f"{out}/torch.jsonl"):
    line = line.strip()
    if line.startswith("{"):
        j = json.loads(line)
        sdpa[(j["B"], j["T"])] = j["fwd_ms"]
device = None
for r in range(1, rounds + 1):
    j = json.load(open(f"{out}/ops_r{r}.json"))
    device = j["device"]
    for row in j["rows"]:
        if not row["op"].startswith("flash_attention_fwd"):
            continue
        name = row["op"][len("flash_attention_fwd"):].lstrip("_") or "default"
        B, T, H, Hk, D = (int(x) for x in row["shape"].split("x"))
        ms, ref = row["median_ms"], sdpa.get((B, T))
        ratio = f"{ms / ref:.3f}" if ref else "n/a"
        ref_s = f"{ref:.3f}" if ref else "n/a"
        print(f"{name:8s} round {r}  B={B} T={T} H={H}/{Hk} D={D}  {ms:.3f} ms"
              f"  ({row['tflops']:.0f} TFLOP/s)  SDPA {ref_s} ms  ratio {ratio}")
print(f"device: {device}")
EOF
