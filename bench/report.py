"""The benchmark's table (fence beside its baseline, the ratio, the target) and latest.json."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Summary, ratio


@dataclass(frozen=True)
class Row:
    """One line of the table.

    Attributes:
        figure: what was measured.
        fence: fence's measurement.
        baseline: the baseline's measurement in the same run (``None``: the target is absolute).
        baseline_name: what the baseline is.
        value: the number the target applies to (a ratio, or an absolute median/percentile).
        target: the target, as text.
        met: whether ``value`` meets it (``None``: no target).
    """

    figure: str
    fence: str
    baseline: str
    baseline_name: str
    value: float
    target: str
    met: bool | None

    def to_json(self) -> dict[str, object]:
        """The row as JSON."""
        return {"figure": self.figure, "fence": self.fence, "baseline": self.baseline,
                "baseline_name": self.baseline_name,
                "value": None if math.isnan(self.value) else round(self.value, 3),
                "target": self.target, "met": self.met}


def ratio_row(figure: str, fence: Summary, baseline: Summary, baseline_name: str,
              limit: float | None) -> Row:
    """A row whose target is fence/baseline ≤ ``limit``."""
    value = ratio(fence, baseline)
    return Row(figure=figure, fence=fence.text(), baseline=baseline.text(), baseline_name=baseline_name,
               value=value, target=f"ratio ≤ {limit}" if limit is not None else "",
               met=None if limit is None else value <= limit)


def absolute_row(figure: str, fence: str, value: float, limit: float | None, unit: str,
                 baseline: str = "", baseline_name: str = "") -> Row:
    """A row whose target is an absolute ``value ≤ limit``."""
    return Row(figure=figure, fence=fence, baseline=baseline, baseline_name=baseline_name, value=value,
               target=f"≤ {limit} {unit}" if limit is not None else "",
               met=None if limit is None else value <= limit)


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (readable in a terminal too)."""
    lines = ["| figure | fence | baseline (same run) | value | target | met |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        base = f"{row.baseline} — {row.baseline_name}" if row.baseline else row.baseline_name or "—"
        value = "n/a" if math.isnan(row.value) else f"{row.value:.2f}"
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(f"| {row.figure} | {row.fence} | {base} | {value} | {row.target or '—'} | {met} |")
    return "\n".join(lines)


def write_json(host_file: Path, *, meta: dict[str, object], rows: list[Row],
               figures: dict[str, Summary], extra: dict[str, object]) -> None:
    """Write latest.json: run facts, the table's rows, every figure with its samples."""
    host_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": [r.to_json() for r in rows],
               "figures": {k: v.to_json() for k, v in sorted(figures.items())}, "extra": extra}
    host_file.write_text(json.dumps(payload, indent=2) + "\n")
