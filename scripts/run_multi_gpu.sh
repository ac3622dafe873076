#!/usr/bin/env bash
# Launches a lizard command data-parallel on one or several nodes through mpirun (Open MPI).
#
#   scripts/run_multi_gpu.sh [-n NPROC] [--hostfile FILE] [--timeout SECONDS] -- CMD [ARGS...]
#   e.g. scripts/run_multi_gpu.sh -n 8 -- build/bin/lizard train --config configs/recipe.yaml
#
# -n defaults to the number of GPUs nvidia-smi lists on this node (one rank per GPU). With a
# hostfile ("node1 slots=8" per line) -n is the total over all nodes. Ranks take their GPU from
# the node-local rank (see docs/multi-gpu.md). NCCL_NVLS_ENABLE=0 is exported unless already
# set; NCCL_* and LIZARD_* variables of this shell are forwarded to every rank.
set -euo pipefail

nproc=""
hostfile=""
timeout=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -n|--np) nproc="$2"; shift 2 ;;
    --hostfile) hostfile="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run_multi_gpu.sh: unknown option '$1' (put the command after --)" >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "run_multi_gpu.sh: no command given (usage: run_multi_gpu.sh [-n N] -- CMD ...)" >&2
  exit 2
fi
if [[ -z "$nproc" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    nproc=$(nvidia-smi -L | grep -c '^GPU ' || true)
  fi
  if [[ -z "$nproc" || "$nproc" -lt 1 ]]; then
    echo "run_multi_gpu.sh: no GPU found by nvidia-smi; pass -n" >&2
    exit 2
  fi
fi

export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
if [[ -n "$timeout" ]]; then export LIZARD_DIST_TIMEOUT_S="$timeout"; fi

args=(-np "$nproc" --bind-to none --map-by slot)
if [[ "$(id -u)" == "0" ]]; then args+=(--allow-run-as-root); fi
if [[ -n "$hostfile" ]]; then
  args+=(--hostfile "$hostfile")
else
  args+=(--oversubscribe)  # one node: allow more ranks than detected cores/slots
fi
# Forward the knobs every rank must share (-x NAME exports the current value).
while IFS='=' read -r name _; do
  args+=(-x "$name")
done < <(env | grep -E '^(NCCL_|LIZARD_|CUDA_)' || true)

echo "run_multi_gpu.sh: mpirun ${args[*]} $*" >&2
exec mpirun "${args[@]}" "$@"
