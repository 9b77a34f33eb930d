"""A strict reader of the Prometheus text exposition format (0.0.4), for the metrics tests."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("",), "gauge": ("",)}


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def _number(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


@dataclass
class Family:
    name: str
    type: str
    help: str
    #: (sample name, labels) -> value
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def value(self, suffix: str = "", **labels: str) -> float:
        return self.samples[(self.name + suffix, frozenset(labels.items()))]

    def get(self, suffix: str = "", default: float = 0.0, **labels: str) -> float:
        return self.samples.get((self.name + suffix, frozenset(labels.items())), default)

    def label_sets(self, suffix: str = "") -> list[dict[str, str]]:
        return [dict(labels) for (name, labels) in self.samples if name == self.name + suffix]

    def buckets(self, **labels: str) -> list[tuple[float, float]]:
        """(le, cumulative count) of a histogram's label set, in the order rendered."""
        found = []
        for (name, sample_labels), value in self.samples.items():
            pairs = dict(sample_labels)
            le = pairs.pop("le", None)
            if name == self.name + "_bucket" and pairs == labels and le is not None:
                found.append((_number(le), value))
        return found


def parse(text: str) -> dict[str, Family]:
    """Every metric family; raises AssertionError on anything the format does not allow."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    current: Family | None = None
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, f"HELP of {name} twice"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in _SUFFIXES, kind
            assert name not in families, f"TYPE of {name} twice"
            assert name in helps, f"HELP of {name} before its TYPE"
            current = families[name] = Family(name, kind, helps[name])
        else:
            assert not line.startswith("#"), line
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, _, label_text, value = match.groups()
            assert current is not None and any(name == current.name + s for s in _SUFFIXES[current.type]), (
                f"{name} outside its family"
            )
            labels: dict[str, str] = {}
            rest = label_text or ""
            while rest:
                label = _LABEL.match(rest)
                assert label, f"bad labels in {line!r}"
                assert label.group(1) not in labels
                labels[label.group(1)] = _unescape(label.group(2))
                rest = rest[label.end() :]
            key = (name, frozenset(labels.items()))
            assert key not in current.samples, f"sample twice: {line!r}"
            current.samples[key] = _number(value)
    for family in families.values():
        if family.type == "histogram":
            check_histogram(family)
    return families


def check_histogram(family: Family) -> None:
    """Buckets cumulative and ending in +Inf, which equals _count; _sum present."""
    for labels in family.label_sets("_count"):
        buckets = family.buckets(**labels)
        bounds = [le for le, _ in buckets]
        counts = [count for _, count in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, bounds
        assert counts == sorted(counts), f"{family.name}{labels}: buckets not cumulative: {counts}"
        assert counts[-1] == family.value("_count", **labels)
        assert family.value("_sum", **labels) >= 0
