# Shell helpers over lizard's metrics.jsonl (training lines: {"kind": "train", "step": N, ...}),
# sourced by scripts/multi_gpu_check.sh and scripts/recipe_scale.sh.

# "step value" per training line that has KEY.
series() {  # FILE KEY
  awk -v key="$2" '/"kind": "train"/ {
    s = $0
    if (!match(s, /"step": [0-9]+/)) next
    st = substr(s, RSTART + 8, RLENGTH - 8)
    if (!match(s, "\"" key "\": [-+0-9.eE]+")) next
    print st, substr(s, RSTART + length(key) + 4, RLENGTH - length(key) - 4)
  }' "$1" 2>/dev/null
}

# Median of KEY over the steps after the first SKIP ("null" when there are none).
median_after() {  # FILE KEY SKIP
  series "$1" "$2" | awk -v skip="$3" '$1 > skip { print $2 }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "null"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
