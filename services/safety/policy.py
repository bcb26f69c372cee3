"""The policy: a taxonomy of categories with thresholds and switches, loaded once from YAML.

A policy file either defines a taxonomy (`categories:`) or `extends:` another file and overrides
`thresholds:` / `enabled:` / `disabled:` by category code, so a test or a deployment can make one
category strict without copying the taxonomy. Every mistake is a `PolicyError` at start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

POLICIES_DIR = Path(__file__).resolve().parent / "policies"
DEFAULT_POLICY = POLICIES_DIR / "mlcommons.yaml"

_CATEGORY_KEYS = {"code", "name", "description", "threshold", "enabled", "labels"}
_TOP_KEYS = {"name", "categories", "extends", "thresholds", "enabled", "disabled"}


class PolicyError(ValueError):
    """The policy file is wrong; the message names the file, the key and what to change."""


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    # Verbatim in the Llama Guard prompt: the model card's "Should not / Can" text.
    description: str
    threshold: float = 0.5
    enabled: bool = True
    # Extra classifier labels whose scores feed this category (the max of them and of the code
    # itself); lets the O1..O6 embedded head serve an S1..S14 taxonomy.
    labels: tuple[str, ...] = ()

    # Cached: every check reads them for every category, and a category never changes.
    @cached_property
    def sources(self) -> tuple[str, ...]:
        return (self.code, *(label for label in self.labels if label != self.code))


@dataclass(frozen=True)
class Policy:
    name: str
    categories: tuple[Category, ...]

    @cached_property
    def enabled(self) -> tuple[Category, ...]:
        return tuple(c for c in self.categories if c.enabled)

    def category(self, code: str) -> Category:
        for c in self.categories:
            if c.code == code:
                return c
        raise KeyError(code)


def _threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{where}: threshold must be a number in (0, 1], got {value!r}")
    value = float(value)
    # 0 would flag every text; > 1 could never fire (scores are probabilities).
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise PolicyError(f"{where}: threshold must be in (0, 1], got {value}")
    return value


def _category(raw: Any, where: str) -> Category:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: each category must be a mapping with code, name, description")
    unknown = set(raw) - _CATEGORY_KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_CATEGORY_KEYS)}")
    for key in ("code", "name", "description"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise PolicyError(f"{where}: '{key}' must be a non-empty string")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PolicyError(f"{where}: 'enabled' must be true or false, got {enabled!r}")
    labels = raw.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise PolicyError(f"{where}: 'labels' must be a list of classifier label names")
    return Category(
        code=raw["code"],
        name=raw["name"],
        description=raw["description"].rstrip("\n"),
        threshold=_threshold(raw.get("threshold", 0.5), f"{where}.threshold"),
        enabled=enabled,
        labels=tuple(labels),
    )


def _codes(value: Any, known: Sequence[str], where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise PolicyError(f"{where}: expected a list of category codes")
    for code in value:
        if code not in known:
            raise PolicyError(f"{where}: unknown category {code!r}; the taxonomy has {', '.join(known)}")
    return value


def load_policy(path: Path, _seen: tuple[Path, ...] = ()) -> Policy:
    path = path.resolve()
    if path in _seen:
        raise PolicyError(f"{path}: 'extends' forms a cycle")
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PolicyError(f"cannot read policy file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{path}: the top level must be a mapping")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise PolicyError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    if ("categories" in raw) == ("extends" in raw):
        raise PolicyError(f"{path}: give exactly one of 'categories' (a taxonomy) or 'extends' (a base file)")

    if "extends" in raw:
        base = load_policy(path.parent / str(raw["extends"]), (*_seen, path))
        categories = list(base.categories)
        name = str(raw.get("name", base.name))
    else:
        if not isinstance(raw["categories"], list) or not raw["categories"]:
            raise PolicyError(f"{path}: 'categories' must be a non-empty list")
        categories = [_category(c, f"{path}: categories[{i}]") for i, c in enumerate(raw["categories"])]
        name = str(raw.get("name", path.stem))
        codes = [c.code for c in categories]
        if len(set(codes)) != len(codes):
            raise PolicyError(f"{path}: duplicate category codes in {codes}")

    known = [c.code for c in categories]
    thresholds = raw.get("thresholds", {})
    if not isinstance(thresholds, Mapping):
        raise PolicyError(f"{path}: 'thresholds' must map category codes to numbers")
    _codes(list(thresholds), known, f"{path}: thresholds")
    enable = set(_codes(raw.get("enabled", []), known, f"{path}: enabled"))
    disable = set(_codes(raw.get("disabled", []), known, f"{path}: disabled"))
    if enable & disable:
        raise PolicyError(f"{path}: {sorted(enable & disable)} both enabled and disabled")
    result = []
    for c in categories:
        if c.code in thresholds:
            c = replace(c, threshold=_threshold(thresholds[c.code], f"{path}: thresholds.{c.code}"))
        if c.code in enable or c.code in disable:
            c = replace(c, enabled=c.code in enable)
        result.append(c)
    if not any(c.enabled for c in result):
        raise PolicyError(f"{path}: no category is enabled; the policy would pass everything")
    return Policy(name=name, categories=tuple(result))
