"""Render a bench results file for docs: a markdown table and a chart of ratios.

    python bench/report.py bench/results/latest.json [--doc docs/performance.md] [--png docs/performance.png]
                           [--table NAME] [--no-chart]

Prints the table, writes it between the doc's markers for the table NAME
(`<!-- bench:NAME:start -->`, default "table"), if the doc has them, and
draws grouped bars of the us/peer and us/direct ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.table import ratio, to_markdown  # noqa: E402

# The chart keeps to measures where a ratio reads at a glance; all of them are in the table.
_CHART = ["cold_mbps", "warm_mbps", "warm_range_mbps", "manifest_rps_c1", "manifest_rps_c16", "manifest_rps_c64",
          "herd_upstream_gets", "herd_peak_rss_mib", "wide_peak_rss_mib", "idle_rss_mib", "startup_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--doc", type=Path, default=REPO_ROOT / "docs" / "performance.md")
    parser.add_argument("--png", type=Path, default=REPO_ROOT / "docs" / "performance.png")
    parser.add_argument("--table", default="table", help="which table of the doc to write (its markers' name)")
    parser.add_argument("--no-chart", action="store_true", help="write the table only")
    args = parser.parse_args()
    start, end = f"<!-- bench:{args.table}:start -->", f"<!-- bench:{args.table}:end -->"
    doc = json.loads(args.results.read_text())
    table = to_markdown(doc) + "\n\n" + _caption(doc)
    print(table)
    if args.doc.exists():
        text = args.doc.read_text()
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            args.doc.write_text(f"{head}{start}\n{table}\n{end}{tail}")
            print(f"table written to {args.doc}", file=sys.stderr)
    if not args.no_chart:
        chart(doc, args.png)
        print(f"chart written to {args.png}", file=sys.stderr)


def _caption(doc: dict[str, Any]) -> str:
    m, s = doc["machine"], doc["settings"]
    return (f"Medians of {s['rounds']} round(s); {s['blob_mib']} MiB blobs, herd {s['herd']} × {s['blob_mib']} MiB, "
            f"wide herd {s['wide']} × {s['wide_mib']} MiB, wrk {s['seconds']} s. "
            f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, "
            f"aiohttp {m['aiohttp']}, {m['distribution']}; "
            f"commit {m['commit'][:12]}, {doc['date']}.")


def chart(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [m for m in doc["measures"] if m["key"] in _CHART and m["key"] in doc["values"]]
    series = [(a, b) for a, b in (("us", "peer"), ("us", "direct"), ("us", "before"))
              if a in doc["targets"] and b in doc["targets"]]
    fig, ax = plt.subplots(figsize=(11, 5), dpi=110)
    width = 0.8 / len(series)
    for i, (a, b) in enumerate(series):
        values = [ratio(doc, m, a, b) for m in measures]
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(measures))]
        bars = ax.bar([x for x, v in zip(xs, values, strict=True) if v is not None],
                      [v for v in values if v is not None], width, label=f"{a} / {b}")
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(measures)))
    ax.set_xticklabels([f"{m['label']}\n({'higher' if m['higher_is_better'] else 'lower'} is better)"
                        for m in measures], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("ratio of medians (log scale)")
    ax.set_title("registry-proxy against distribution on one machine: ratios, 1.0 = equal")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
