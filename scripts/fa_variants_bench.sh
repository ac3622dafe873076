#!/usr/bin/env bash
# Times every flash-attention forward kernel variant (LIZARD_FA_FWD_VARIANT, see
# include/lizard/cuda/flash_attention.h) and torch SDPA (flash backend) in one call on one GPU,
# and prints one line per variant and shape: the median forward ms and its ratio to SDPA's.
#
# `lizard bench ops` times `flash_attention_fwd` (the env-selected variant) at B=8,T=2048 and
# B=2,T=8192 (H=32, Hkv=8, D=128, bf16, causal); scripts/bench_attention_torch.py times SDPA at
# the same shapes; each run's flash_attention_fwd_w4x2 row (variant 0's kernel) gives the
# speedup against variant 0 within that run. Run from the repository root on the GPU machine after the build:
#   scripts/fa_variants_bench.sh [path/to/lizard] [iters]
# Environment: VARIANTS (default "0 1 2 3 4 5 6"), ROUNDS (default 1: each round runs every
# variant once; more rounds interleave the variants against clock drift and print each run).
set -euo pipefail

LIZARD=${1:-build/bin/lizard}
ITERS=${2:-30}
VARIANTS=${VARIANTS:-"0 1 2 3 4 5 6"}
ROUNDS=${ROUNDS:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

[ -x "$LIZARD" ] || { echo "fa_variants_bench: no lizard binary at $LIZARD (build first)" >&2; exit 2; }

python3 "$HERE/bench_attention_torch.py" > "$OUT/torch.jsonl"
for r in $(seq 1 "$ROUNDS"); do
  for v in $VARIANTS; do
    LIZARD_FA_FWD_VARIANT=$v "$LIZARD" bench ops --iters "$ITERS" > "$OUT/ops_v${v}_r${r}.json"
  done
done

python3 - "$OUT" "$VARIANTS" "$ROUNDS" <<'EOF'
import json, sys
out, variants, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
sdpa = {}
for line in open(f"{out}/torch.jsonl"):
    line = line.strip()
    if line.startswith("{"):
        j = json.loads(line)
        sdpa[(j["B"], j["T"])] = j["fwd_ms"]
device = None
for r in range(1, rounds + 1):
    for v in variants:
        j = json.load(open(f"{out}/ops_v{v}_r{r}.json"))
        device = j["device"]
        # The same run's 4x2 row (flash_attention_fwd_w4x2 = variant 0's kernel), timed seconds
        # before in the same process: the speedup against it is immune to drift between runs.
        base = {r_["shape"]: r_["median_ms"] for r_ in j["rows"] if r_["op"] == "flash_attention_fwd_w4x2"}
        for row in j["rows"]:
            if row["op"] != "flash_attention_fwd":
                continue
            B, T, H, Hk, D = (int(x) for x in row["shape"].split("x"))
            ms, ref = row["median_ms"], sdpa.get((B, T))
            ratio = f"{ms / ref:.3f}" if ref else "n/a"
            ref_s = f"{ref:.3f}" if ref else "n/a"
            v0 = base.get(row["shape"])
            speed = f"{v0 / ms:.3f}x of v0 ({v0:.3f} ms)" if v0 else "v0 n/a"
            print(f"variant {v} round {r}  B={B} T={T} H={H}/{Hk} D={D}  {ms:.3f} ms"
                  f"  ({row['tflops']:.0f} TFLOP/s)  SDPA {ref_s} ms  ratio {ratio}  speed {speed}")
print(f"device: {device}")
EOF
