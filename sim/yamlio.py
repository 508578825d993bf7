"""Safe YAML reading that refuses duplicate keys (PyYAML silently keeps the last one)."""

from __future__ import annotations

import yaml


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no object construction) that raises on a duplicate mapping key."""


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


def load_yaml(text: str):
    """Parse YAML text safely; duplicate keys are a ``yaml.YAMLError`` with the line of the second one."""
    return yaml.load(text, Loader=_StrictSafeLoader)


def describe_yaml_error(err: yaml.YAMLError) -> str:
    """'line L, column C: problem' for a YAML error."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{where}{problem}"
