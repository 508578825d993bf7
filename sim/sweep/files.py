"""Reading a study file (an experiment or a tuning file): YAML, its schema, and its base scenario's path."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from sim.errors import FleetsimError
from sim.yamlio import describe_yaml_error, load_yaml


class SweepError(FleetsimError):
    """A problem with an experiment or tuning file, or its runs (the message names the file and the field)."""


def read_study_file(path: str | Path, schema: type[BaseModel], kind: str) -> tuple[BaseModel, Path]:
    """Validate the YAML file ``path`` against ``schema``; return it and its ``scenario`` resolved against the file's
    folder. :class:`SweepError` naming the file and field (``kind``: what the file is, for messages)."""
    from sim.scenario import _json_keys, _message

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: {kind} file not found")
    article = "an" if kind[0] in "aeiou" else "a"
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SweepError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML: {describe_yaml_error(err)}") from None
    if data is None:
        raise SweepError(f"{path}: empty file; {article} {kind} file is a mapping (name, scenario, ...)")
    if not isinstance(data, dict):
        raise SweepError(f"{path}: {article} {kind} file is a mapping (name, scenario, ...), got "
                         f"{type(data).__name__}")
    try:
        # Strict JSON-mode validation, as a scenario's: a quoted string is not a number, nor a YAML boolean one.
        config = schema.model_validate_json(json.dumps(_json_keys(data), default=str), strict=True)
    except ValidationError as err:
        field, msg = _message(err.errors()[0], data, schema)
        raise SweepError(f"{path}: {field}: {msg}" if field else f"{path}: {msg}") from None
    scenario_path = (path.parent / config.scenario).resolve()
    if not scenario_path.is_file():
        raise SweepError(f"{path}: scenario: file not found: {config.scenario} (relative to the {kind} file)")
    return config, scenario_path
