"""Rows of medians and ratios from a results document, for the console and for markdown."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["RATIOS", "ratio", "rows", "to_markdown", "to_text"]

# (numerator, denominator): the only cross-target comparisons the bench reports.
RATIOS = [("us", "peer"), ("us", "direct"), ("us", "before"), ("us-uvloop", "us"), ("us-s3", "us"), ("us-s3-tier", "us")]


def median(doc: dict[str, Any], key: str, target: str) -> float | None:
    values = doc["values"].get(key, {}).get(target)
    return statistics.median(values) if values else None


def ratio(doc: dict[str, Any], measure: dict[str, Any], num: str, den: str) -> float | None:
    if den == "direct" and not measure["versus_direct"]:
        return None
    a, b = median(doc, measure["key"], num), median(doc, measure["key"], den)
    if a is None or b is None or b == 0:
        return None
    return a / b


def rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    targets: list[str] = doc["targets"]
    ratios = [(a, b) for a, b in RATIOS if a in targets and b in targets]
    header = ["measure", *targets, *(f"{a}/{b}" for a, b in ratios)]
    body = []
    for measure in doc["measures"]:
        if measure["key"] not in doc["values"]:
            continue
        cells = [f"{measure['label']} ({measure['unit']})"]
        cells += [_fmt(median(doc, measure["key"], t)) for t in targets]
        cells += [_fmt_ratio(ratio(doc, measure, a, b)) for a, b in ratios]
        body.append(cells)
    return header, body


def to_text(doc: dict[str, Any]) -> str:
    header, body = rows(doc)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *body]]
    return "\n".join(lines)


def to_markdown(doc: dict[str, Any]) -> str:
    header, body = rows(doc)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer() and value < 1e4:
        return str(int(value))  # counts of requests
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}×"
