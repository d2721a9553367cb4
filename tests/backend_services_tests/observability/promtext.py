"""A strict reader of the Prometheus text format, for checking what we expose."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_VALUE = re.compile(r"^ ([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf|NaN|\.\d+(?:[eE][-+]?\d+)?))$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,?)')


@dataclass
class Family:
    name: str
    kind: str = "untyped"
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _sample(line: str) -> tuple[str, dict[str, str], str]:
    m = _NAME.match(line)
    assert m is not None, f"malformed sample line {line!r}"
    name, pos = m.group(0), m.end()
    labels: dict[str, str] = {}
    if pos < len(line) and line[pos] == "{":
        pos += 1
        while line[pos] != "}":
            lm = _LABEL.match(line, pos)
            assert lm is not None, f"bad label set in {line!r} at {pos}"
            assert lm.group(1) not in labels, f"duplicate label {lm.group(1)!r}"
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
            assert lm.group(3) or line[pos] == "}", f"missing comma in {line!r}"
        pos += 1
    vm = _VALUE.match(line[pos:])
    assert vm is not None, f"malformed value in {line!r}"
    return name, labels, vm.group(1)


def parse(text: str) -> dict[str, Family]:
    """Families by name; raises AssertionError on anything malformed."""
    assert text == "" or text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, Family] = {}
    typed: set[str] = set()
    current: Family | None = None
    for line in text.split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"family {name} appears twice"
            current = families[name] = Family(name, help=help_text)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None, f"TYPE for {name} before its HELP"
            assert current.name == name, f"TYPE for {name} out of place"
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), kind
            assert name not in typed, f"second TYPE line for {name}"
            typed.add(name)
            current.kind = kind
        elif line.startswith("#") or not line:
            continue
        else:
            sample_name, labels, raw = _sample(line)
            assert current is not None, f"sample before any family: {line!r}"
            assert sample_name.startswith(current.name), f"{sample_name} outside {current.name}"
            value = float(raw.replace("Inf", "inf")) if "Inf" in raw else float(raw)
            if raw == "NaN":
                value = math.nan
            current.samples.append((sample_name, labels, value))
    return families


def value(
    families: dict[str, Family], name: str, sample: str | None = None, **labels: str
) -> float:
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    fam = families[name]
    hits = [
        v
        for s, ls, v in fam.samples
        if s == (sample or name) and all(ls.get(k) == w for k, w in labels.items())
    ]
    assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples match in {fam.samples}"
    return hits[0]
