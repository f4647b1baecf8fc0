#!/usr/bin/env python3
"""Draws latest.json as ratios.svg, both in BENCH_OUT (default target/bench,
relative to the repository; bench/results with `make bench BENCH_SAVE=1`).

The throughput of each command as a multiple of INCR on keys that carry a
TTL, the baseline the targets use, for a pipeline of 32 and of 1, with the
targets marked. Needs matplotlib (make bench installs it in a virtualenv
under target/).
"""

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / os.environ.get("BENCH_OUT", "target/bench")
BASELINE = "INCR (TTL keys)"


def main():
    data = json.loads((RESULTS / "latest.json").read_text())
    runs = data["throughput"]
    series = [("keyspace, -P 32", "#1f77b4"), ("keyspace, -P 1", "#aec7e8"), ("hot key, -P 32", "#ff7f0e")]
    names = [n for n in runs["keyspace, -P 32"] if n != "PING"]

    plt.rcParams["svg.hashsalt"] = "redis-ratelimit"
    fig, ax = plt.subplots(figsize=(9, 6.5))
    height = 0.27
    for i, (label, color) in enumerate(series):
        table = runs[label]
        base = table[BASELINE]["rps_median"]
        ratios = [table[n]["rps_median"] / base for n in names]
        positions = [y + (i - 1) * height for y in range(len(names))]
        bars = ax.barh(positions, ratios, height=height, color=color, label=label)
        ax.bar_label(bars, labels=[f"{r:.2f}" for r in ratios], padding=2, fontsize=7)
    for target, style in [(1.0, "-"), (0.9, "--"), (0.8, ":")]:
        ax.axvline(target, color="grey", linestyle=style, linewidth=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"requests/s as a multiple of {BASELINE} (median of the rounds)")
    ax.set_title(f"redis-ratelimit on redis {data['server']}: throughput relative to INCR on TTL keys\n"
                 f"lines: 1.0, the 0.9 target (fixed window) and the 0.8 target (other algorithms)",
                 fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    out = RESULTS / "ratios.svg"
    fig.savefig(out, format="svg", metadata={"Date": None})
    print(f"Written: {out}")


if __name__ == "__main__":
    main()
