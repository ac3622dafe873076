#!/usr/bin/env bash
# GPU timeline of any lizard command, without nsys: loads the CUPTI tracer
# (build/lib/liblizard_kernel_trace.so, built with the CUDA backend when the toolkit has CUPTI)
# through CUDA's injection hook, then summarises where the GPU waited (scripts/kernel_trace.py).
#   scripts/kernel_trace.sh [--steps N] [--out trace.jsonl] -- build/bin/lizard bench step ...
# The command's own stdout/stderr pass through; the summary follows on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
steps=1 out="" build="${LIZARD_BUILD_DIR:-$root/build}"
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "kernel_trace.sh: unknown option '$1' (expected --steps N, --out FILE, then -- COMMAND...)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "kernel_trace.sh: no command to trace (put it after --)" >&2; exit 2; }
lib="$build/lib/liblizard_kernel_trace.so"
[ -f "$lib" ] || { echo "kernel_trace.sh: $lib not found: build the target lizard_kernel_trace (needs CUDA with CUPTI)" >&2; exit 1; }
[ -n "$out" ] || out="$(mktemp --suffix=.jsonl)"
CUDA_INJECTION64_PATH="$lib" LIZARD_TRACE_OUT="$out" "$@"
python3 "$here/kernel_trace.py" "$out" --steps "$steps"
