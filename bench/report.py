"""Figures, the ratios between them, and how they are shown: a table on stdout
and one JSON document with every figure, every ratio, the machine and the
command line, so two runs (or two branches) can be compared figure by figure.

A ratio is always taken between two figures of the same run: on a shared
machine the absolute numbers move with the neighbours' load, the ratios much
less. A ratio whose figures are missing (a section that was not run, or that
failed) is kept, with value None, so the JSON always has the same keys."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """What a later deliverable must reach: ``value op limit``."""

    op: str  # ">=" or "<="
    limit: float

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value >= self.limit if self.op == ">=" else value <= self.limit

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}"


@dataclass
class Figure:
    section: str
    name: str
    value: float | None
    unit: str
    target: Target | None = None
    note: str = ""

    @property
    def key(self) -> str:
        return f"{self.section}/{self.name}"


@dataclass
class Ratio:
    section: str
    name: str
    numerator: str
    denominator: str
    target: Target | None = None
    value: float | None = None


@dataclass
class Results:
    figures: dict[str, Figure] = field(default_factory=dict)
    ratios: list[Ratio] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # What makes a figure of this run suspect (events that went through the outbox).
    warnings: list[str] = field(default_factory=list)

    def add(
        self,
        section: str,
        name: str,
        value: float | None,
        unit: str,
        *,
        target: Target | None = None,
        note: str = "",
    ) -> Figure:
        figure = Figure(section, name, value, unit, target, note)
        self.figures[figure.key] = figure
        return figure

    def value(self, key: str) -> float | None:
        figure = self.figures.get(key)
        return None if figure is None else figure.value

    def ratio(
        self,
        section: str,
        name: str,
        numerator: str,
        denominator: str,
        target: Target | None = None,
    ) -> Ratio:
        """``numerator`` and ``denominator`` are figure keys (``section/name``)."""
        ratio = Ratio(section, name, numerator, denominator, target)
        self.ratios.append(ratio)
        return ratio

    def resolve(self) -> None:
        for ratio in self.ratios:
            num, den = self.value(ratio.numerator), self.value(ratio.denominator)
            ratio.value = None if num is None or den is None or den == 0 else num / den

    def detail(self, section: str, name: str, data: Any) -> None:
        self.details.setdefault(section, {})[name] = data


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _mark(target: Target | None, value: float | None) -> str:
    if target is None:
        return ""
    met = target.met(value)
    verdict = "?" if met is None else ("ok" if met else "MISSED")
    return f"target {target}: {verdict}"


def table(results: Results, sections: list[str]) -> str:
    """Per section: its figures, then its ratios (with the target where one is set)."""
    lines: list[str] = []
    for section in sections:
        figures = [f for f in results.figures.values() if f.section == section]
        ratios = [r for r in results.ratios if r.section == section]
        if not figures and not ratios and section not in results.errors:
            continue
        lines.append(f"== {section} " + "=" * max(0, 74 - len(section)))
        if section in results.errors:
            lines.append(f"  FAILED: {results.errors[section]}")
        for f in figures:
            extra = "  ".join(x for x in (_mark(f.target, f.value), f.note) if x)
            lines.append(f"  {f.name:44s} {_fmt(f.value):>10s} {f.unit:10s} {extra}".rstrip())
        for r in ratios:
            value = "-" if r.value is None else f"{r.value:.2f}x"
            line = f"  {'ratio ' + r.name:44s} {value:>10s} {'':10s} {_mark(r.target, r.value)}"
            lines.append(line.rstrip())
    lines += [f"WARNING: {w}" for w in results.warnings]
    return "\n".join(lines)


def to_json(results: Results, header: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, dict[str, Any]] = {}
    for f in results.figures.values():
        entry: dict[str, Any] = {"value": f.value, "unit": f.unit}
        if f.target is not None:
            entry.update(target=str(f.target), met=f.target.met(f.value))
        if f.note:
            entry["note"] = f.note
        figures.setdefault(f.section, {})[f.name] = entry
    ratios: dict[str, dict[str, Any]] = {}
    for r in results.ratios:
        entry = {"value": r.value, "numerator": r.numerator, "denominator": r.denominator}
        if r.target is not None:
            entry.update(target=str(r.target), met=r.target.met(r.value))
        ratios.setdefault(r.section, {})[r.name] = entry
    return {
        **header,
        "figures": figures,
        "ratios": ratios,
        "details": results.details,
        "errors": results.errors,
        "warnings": results.warnings,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
