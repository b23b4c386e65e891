"""Summaries of repeated measurements: median and spread, percentiles, and ratios."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Repeated measurements of one quantity.

    Attributes:
        samples: every measurement, in the order taken.
        unit: ``"s"``, ``"ms"``, ``"MB"`` …
    """

    samples: tuple[float, ...]
    unit: str

    @property
    def median(self) -> float:
        """The median (the figure the table shows)."""
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def low(self) -> float:
        """The smallest sample."""
        return min(self.samples) if self.samples else float("nan")

    @property
    def high(self) -> float:
        """The largest sample."""
        return max(self.samples) if self.samples else float("nan")

    def percentile(self, pct: float) -> float:
        """The ``pct``-th percentile (nearest rank), e.g. 50 or 99."""
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    def to_json(self) -> dict[str, object]:
        """Median, spread and the raw samples, for latest.json."""
        return {"unit": self.unit, "n": len(self.samples), "median": _round(self.median),
                "min": _round(self.low), "max": _round(self.high),
                "p99": _round(self.percentile(99)), "samples": [_round(s) for s in self.samples]}

    def text(self) -> str:
        """``1.23 s (1.10–1.40, n=5)``."""
        if not self.samples:
            return "n/a"
        return f"{_fmt(self.median)} {self.unit} ({_fmt(self.low)}–{_fmt(self.high)}, n={len(self.samples)})"


def summary(samples: list[float] | tuple[float, ...], unit: str) -> Summary:
    """A summary of ``samples``."""
    return Summary(samples=tuple(samples), unit=unit)


def ratio(fence: Summary, baseline: Summary) -> float:
    """Median over median."""
    if not fence.samples or not baseline.samples or baseline.median == 0:
        return float("nan")
    return fence.median / baseline.median


def _round(value: float) -> float:
    return round(value, 4)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"
