"""Safe YAML reading that refuses duplicate keys (PyYAML silently keeps the last one)."""

from __future__ import annotations

import re

import yaml


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no object construction) that raises on a duplicate mapping key and on flow collections
    (``[...]``, ``{...}``) nested deeper than :data:`MAX_DEPTH` (PyYAML's scanner slows quadratically with depth)."""

    def fetch_flow_collection_start(self, TokenClass):  # noqa: N803 - PyYAML's name
        if self.flow_level >= MAX_DEPTH:
            raise yaml.scanner.ScannerError(None, None, f"nested too deeply (more than {MAX_DEPTH} levels)",
                                            self.get_mark())
        super().fetch_flow_collection_start(TokenClass)


def _mapping_without_duplicates(loader: _StrictSafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (the first one would be silently lost)", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
# YAML 1.1 reads 1e6 (an exponent without a dot) as a string; a number is what anyone means (YAML 1.2 agrees).
_StrictSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


_WHOLE_EXPONENT = re.compile(r"^[-+]?[0-9][0-9_]*[eE]\+?[0-9]+$")


def _number(loader: _StrictSafeLoader, node: yaml.ScalarNode) -> float | int:
    """A float, except that a whole number written with an exponent and no point (``1e6``) is an int: a count
    written so is what anyone means, and an int fills a float field too."""
    value = loader.construct_yaml_float(node)
    if _WHOLE_EXPONENT.match(node.value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


_StrictSafeLoader.add_constructor("tag:yaml.org,2002:float", _number)


#: Deeper nesting is refused: a scenario needs a handful of levels, and a few hundred exhaust Python's recursion
#: limit in the parser or the validator (or never end: an alias inside the node it names).
MAX_DEPTH = 64
#: More values, counting each use of an alias in full, are refused: the validator expands aliases (a "billion
#: laughs" file of a few lines would hold 10^9 values).
MAX_VALUES = 10_000_000


def _shape(node, memo: dict, active: set) -> tuple[int, int]:
    """(nesting depth, number of values with aliases expanded) of a loaded document, each capped just past its limit;
    an alias inside the node it names (a cycle) counts as too deep. Memoised by node, so shared nodes cost once."""
    if not isinstance(node, dict | list):
        return 0, 1
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active or len(active) > MAX_DEPTH:
        return MAX_DEPTH + 1, 1
    active.add(key)
    depth, size = 0, 1
    for child in node.values() if isinstance(node, dict) else node:
        d, n = _shape(child, memo, active)
        depth, size = max(depth, d), min(size + n, MAX_VALUES + 1)
    active.discard(key)
    memo[key] = (min(depth + 1, MAX_DEPTH + 1), size)
    return memo[key]


def load_yaml(text: str):
    """Parse YAML text safely; duplicate keys are a ``yaml.YAMLError`` with the line of the second one, and so are
    nesting deeper than :data:`MAX_DEPTH` levels and more than :data:`MAX_VALUES` values once aliases expand."""
    try:
        data = yaml.load(text, Loader=_StrictSafeLoader)
    except RecursionError:
        raise yaml.YAMLError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    depth, size = _shape(data, {}, set())
    if depth > MAX_DEPTH:
        raise yaml.YAMLError(f"nested too deeply (more than {MAX_DEPTH} levels, or an alias inside the node it names)")
    if size > MAX_VALUES:
        raise yaml.YAMLError(f"more than {MAX_VALUES:,} values once its aliases are expanded")
    return data


def describe_yaml_error(err: yaml.YAMLError) -> str:
    """'line L, column C: problem' for a YAML error."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{where}{problem}"
