#!/usr/bin/env python3
"""Plots a lizard metrics JSONL file (written by the trainer) to a PNG.

Each line is a JSON object with "kind" ("train" or "val") and numeric fields such as step,
loss, lr, grad_norm, tokens_per_s, mfu. Panels: training loss (with validation loss when
present), learning rate, gradient norm, throughput.

  scripts/plot_metrics.py runs/x/metrics.jsonl [more.jsonl ...] -o curves.png
Several files are overlaid (e.g. paper vs plus presets), labelled by their parent directory.
"""
import argparse
import json
import os
import sys


def load(path):
    train, val = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path} line {n}: {e}")
            (val if rec.get("kind") == "val" else train).append(rec)
    # A resumed run appends: keep the last record of each step.
    def dedup(recs):
        by_step = {}
        for r in recs:
            by_step[r.get("step")] = r
        return [by_step[s] for s in sorted(k for k in by_step if k is not None)]
    return dedup(train), dedup(val)


def series(recs, key):
    pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="metrics JSONL files")
    ap.add_argument("-o", "--output", default="metrics.png", help="PNG to write")
    ap.add_argument("--smooth", type=int, default=1, help="moving-average window for the loss")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: matplotlib is required (pip install matplotlib)")

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    (ax_loss, ax_lr), (ax_gn, ax_tps) = axes
    for path in args.files:
        train, val = load(path)
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        x, y = series(train, "loss")
        if args.smooth > 1 and y:
            w = args.smooth
            y = [sum(y[max(0, i - w + 1):i + 1]) / len(y[max(0, i - w + 1):i + 1]) for i in range(len(y))]
        ax_loss.plot(x, y, label=f"{label} train")
        vx, vy = series(val, "loss")
        if vx:
            ax_loss.plot(vx, vy, "o--", label=f"{label} val")
        ax_lr.plot(*series(train, "lr"), label=label)
        ax_gn.plot(*series(train, "grad_norm"), label=label)
        ax_tps.plot(*series(train, "tokens_per_s"), label=label)
    for ax, title in ((ax_loss, "loss"), (ax_lr, "learning rate"), (ax_gn, "gradient norm"),
                      (ax_tps, "tokens / s")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_gn.set_yscale("log")
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
