"""Load a scenario file: read YAML safely, apply ``--set`` overrides, resolve paths, validate, cross-check.

This is the one place user configuration enters. Every problem becomes a :class:`~sim.errors.ScenarioError`
naming the file and the dotted field, with the allowed values where there is a fixed set.
"""

from __future__ import annotations

import contextlib
import json
import re
import typing
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from sim.catalog import load_catalog
from sim.cluster.deploy import plan_pools
from sim.cluster.router import ROUTERS
from sim.config import FittedWorkload, Scenario, ServeGenWorkload, TraceWorkload
from sim.errors import CatalogError, ScenarioError, unknown_name
from sim.workload.source import trace_arrays
from sim.workload.synthesis import read_servegen
from sim.workload.traces import read_trace
from sim.yamlio import describe_yaml_error, load_yaml


def read_yaml(path: Path) -> dict:
    """The mapping in a YAML file (safe loader: no object construction)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(str(path), "", "file not found") from None
    except IsADirectoryError:
        raise ScenarioError(str(path), "", "is a directory, expected a scenario YAML file") from None
    except UnicodeDecodeError as err:
        raise ScenarioError(str(path), "", f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ScenarioError(str(path), "", f"cannot read: {err.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as err:
        raise ScenarioError(str(path), "", f"not valid YAML: {describe_yaml_error(err)}") from None
    if data is None:
        raise ScenarioError(str(path), "", "empty file; a scenario needs at least workload and pools")
    if not isinstance(data, dict):
        raise ScenarioError(str(path), "", f"a scenario must be a mapping of fields, got {type(data).__name__}")
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML (``3``, ``true``, ``[1, 2]``)."""
    source = f"--set {assignment}"
    if "=" not in assignment:
        raise ScenarioError(source, "", "expected dotted.key=value")
    key, _, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ScenarioError(source, key, "empty segment in the dotted key")
    try:
        value = load_yaml(raw)
    except yaml.YAMLError:
        raise ScenarioError(source, key, f"cannot parse value {raw!r}") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e9 as a string; a number is what anyone means
        with contextlib.suppress(ValueError):
            value = float(value) if not value.strip().lstrip("+-").isdigit() else int(value)
    assign(data, key, value, source)


def assign(data: dict, key: str, value, source: str) -> None:
    """Set the value at a dotted ``key`` of a scenario mapping in place (list items by index; missing mappings are
    made); :class:`ScenarioError` from ``source`` naming the key when the path cannot hold it."""
    parts = key.strip().split(".")
    if not all(parts):
        raise ScenarioError(source, key, "empty segment in the dotted key")
    node = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ScenarioError(source, ".".join(parts[: i + 1]), f"no list index {part} (length {len(node)})")
            node = node[int(part)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        else:
            raise ScenarioError(source, ".".join(parts[:i]), "is a value, not a mapping; cannot set a sub-key")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ScenarioError(source, key, f"no list index {last} (length {len(node)})")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ScenarioError(source, ".".join(parts[:-1]), "is a value, not a mapping; cannot set a sub-key")


def _resolve_paths(data: dict, base: Path) -> None:
    """Make file references relative to the scenario file's folder absolute."""

    def fix(path):
        return str((base / path).resolve()) if isinstance(path, str) and not Path(path).is_absolute() else path

    if isinstance(data.get("catalog_files"), list):
        data["catalog_files"] = [fix(p) for p in data["catalog_files"]]
    workloads = [data.get("workload")]
    if isinstance(data.get("classes"), list):
        workloads += [c.get("workload") for c in data["classes"] if isinstance(c, dict)]
    for workload in workloads:
        if not isinstance(workload, dict):
            continue
        if "path" in workload:
            workload["path"] = fix(workload["path"])
        for key in ("prompt_tokens", "output_tokens"):
            dist = workload.get(key)
            if isinstance(dist, dict) and "path" in dist:
                dist["path"] = fix(dist["path"])
    pools = data.get("pools")
    if isinstance(pools, dict):
        for pool in pools.values():
            if isinstance(pool, dict) and isinstance(pool.get("model"), str) and pool["model"].endswith(".json"):
                pool["model"] = fix(pool["model"])


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names of the schema model found by following a pydantic error location (tags included)."""
    current: object = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None)
            if info is None:
                return None
            current = info.annotation
            continue
        args = [a for a in typing.get_args(current) if a is not type(None)]
        origin = typing.get_origin(current)
        if origin is dict:
            current = args[1]
            continue
        if origin is typing.Annotated:
            current = args[0]
            args = [a for a in typing.get_args(current) if a is not type(None)]
        # A union: the location names the tag of the member that was tried.
        members = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        match = [m for m in members if any(
            getattr(f, "default", None) == part for f in m.model_fields.values())]
        if not match:
            return None
        current = match[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        fields = current.model_fields
        names = [f.alias or n for n, f in fields.items()]
        # The kind of block first (a Literal tag such as type, process, dist or a perf model), then its fields.
        tags = [f.alias or n for n, f in fields.items() if typing.get_origin(f.annotation) is typing.Literal
                and n in ("type", "process", "dist", "model", "policy", "mode")]
        return tags + [n for n in names if n not in tags]
    return None


def _user_path(data: object, loc: tuple) -> str:
    """The dotted path as the user wrote it: drops the union-tag segments pydantic adds to locations."""
    parts, node = [], data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            parts.append(str(part))
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part in node.values():
            continue  # a discriminator tag
        else:
            parts.append(str(part))
            node = None
    return ".".join(parts)


def _message(err: dict, data: dict, schema: type[BaseModel] = Scenario) -> tuple[str, str]:
    """(the field as the user wrote it, a one-line message) of a pydantic error on ``data`` against ``schema``."""
    loc = tuple(err["loc"])
    field = _user_path(data, loc)
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _fields_at(schema, loc[:-1])
        msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tag_field = str(ctx.get("discriminator", "type")).strip("'")
        field = f"{field}.{tag_field}"
        msg = unknown_name(tag_field, ctx.get("tag"), re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))))
    elif kind == "union_tag_not_found":
        msg = f"missing {err.get('ctx', {}).get('discriminator', 'type')} (which kind of entry this is)"
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif not isinstance(err.get("input"), dict | list):
        msg = f"{msg}, got {err.get('input')!r}"
    return field, msg


def validate_scenario(data: dict, source: str) -> Scenario:
    """Validate a scenario mapping (paths already resolved) and check its references against the catalog."""
    try:
        # Strict JSON-mode validation: a YAML boolean or a quoted string is not a number, while lists still
        # fill tuple fields and integers fill float fields.
        scenario = Scenario.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as err:
        field, msg = _message(err.errors()[0], data)
        extra = len(err.errors()) - 1
        more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
        raise ScenarioError(source, field, msg + more) from None
    if scenario.router.policy not in ROUTERS:
        raise ScenarioError(source, "router.policy", unknown_name("router", scenario.router.policy, ROUTERS))
    fleet = scenario.fleet_autoscale
    if fleet is not None:
        for i, name in enumerate(fleet.pools):
            if name not in scenario.pools:
                raise ScenarioError(source, f"fleet_autoscale.pools.{i}", unknown_name("pool", name, scenario.pools))
            if scenario.pools[name].autoscale is not None:
                raise ScenarioError(source, f"pools.{name}.autoscale", "this pool is sized by fleet_autoscale; "
                                    "remove its own autoscale (one autoscaler per pool)")
            sharing = scenario.pools[name].sharing
            if sharing is not None and sharing.mode != "passthrough":
                raise ScenarioError(source, f"pools.{name}.sharing", f"fleet_autoscale cannot size a pool with "
                                    f"sharing mode {sharing.mode!r} (replicas on shared GPUs are placed once)")
    try:
        catalog = load_catalog(tuple(Path(p) for p in scenario.catalog_files))
    except CatalogError as err:
        raise ScenarioError(source, "catalog_files", str(err)) from None
    served = {p.model for p in scenario.pools.values()}
    for i, (_, wl, _) in enumerate(scenario.traffic()):
        at = "workload" if i == 0 else f"classes.{i - 1}.workload"
        if isinstance(wl, FittedWorkload | ServeGenWorkload):
            want = Path.is_file if isinstance(wl, FittedWorkload) else Path.is_dir
            if not want(Path(wl.path)):
                raise ScenarioError(source, f"{at}.path", f"{'trace file' if want is Path.is_file else 'folder'} "
                                    f"not found: {wl.path}")
            try:
                arrays = (read_trace(wl.format, wl.path, **wl.reader_options()) if isinstance(wl, FittedWorkload)
                          else read_servegen(wl.path, list(wl.clients) if wl.clients else None))
            except ValueError as err:
                raise ScenarioError(source, f"{at}.columns", str(err)) from None
            if not len(arrays):
                raise ScenarioError(source, f"{at}.path", "holds no request")
        if isinstance(wl, TraceWorkload):
            if not Path(wl.path).is_file():
                raise ScenarioError(source, f"{at}.path", f"trace file not found: {wl.path}")
            if len(trace_arrays(wl)) == 0:  # reads (and checks) every row; the reader caches the arrays
                raise ScenarioError(source, f"{at}.start_s", f"the window from start_s={wl.start_s:g} s "
                                    f"(duration_s={wl.duration_s}) holds no request of the trace")
        for key in ("prompt_tokens", "output_tokens"):
            dist = getattr(wl, key, None)
            if getattr(dist, "path", None):
                if not Path(dist.path).is_file():
                    raise ScenarioError(source, f"{at}.{key}.path", f"length file not found: {dist.path}")
                dist.values  # noqa: B018 - reads and checks every row now, not mid-run
        out = getattr(wl, "output_tokens", None)
        if getattr(out, "paired", False):
            prompt = wl.prompt_tokens
            if prompt.dist != "empirical" or prompt.path != out.path:
                raise ScenarioError(source, f"{at}.output_tokens.paired", "paired needs an empirical prompt_tokens "
                                    f"from the same file ({out.path})")
            if len(prompt.values) != len(out.values):
                raise ScenarioError(source, f"{at}.output_tokens.paired", "the two columns have different lengths")
        if wl.model is not None and wl.model not in served:
            raise ScenarioError(source, f"{at}.model", unknown_name("model served by a pool", wl.model, served))
    plan_pools(scenario, catalog, source)
    return scenario


def load_scenario(path: str | Path, overrides: Iterable[str] = ()) -> Scenario:
    """Read, override, validate and cross-check a scenario file.

    Parameters
    ----------
    path
        The scenario YAML. Relative file references inside it are relative to its folder.
    overrides
        ``dotted.key=value`` strings applied before validation, e.g. ``pools.h100.replicas=4``.

    Raises
    ------
    ScenarioError
        With the file and the field of the first problem.
    """
    path = Path(path)
    data = read_yaml(path)
    overrides = list(overrides)
    for assignment in overrides:
        apply_override(data, assignment)
    _resolve_paths(data, path.parent)
    try:
        return validate_scenario(data, str(path))
    except ScenarioError as err:
        # A problem in a field that an override set is the override's, not the file's.
        for assignment in reversed(overrides):
            key = assignment.partition("=")[0].strip()
            if err.field and (err.field == key or err.field.startswith(key + ".")):
                raise type(err)(f"--set {assignment}", err.field, err.message) from None
        raise


def load_scenario_with(path: str | Path, values: dict, source: str, seed: int | None = None,
                       values_base: str | Path | None = None) -> Scenario:
    """:func:`load_scenario` with typed overrides: ``values`` maps dotted keys to values (a sweep's arm); file paths
    among them are relative to ``values_base`` (the file that gave them; default: the scenario's folder); errors in a
    field an override set are reported from ``source``."""
    path = Path(path)
    data = read_yaml(path)
    _resolve_paths(data, path.parent)  # the scenario's own references, relative to it
    for key, value in values.items():
        assign(data, key, value, source)
    if seed is not None:
        data["seed"] = seed
    _resolve_paths(data, Path(values_base) if values_base is not None else path.parent)
    try:
        return validate_scenario(data, str(path))
    except ScenarioError as err:
        # A problem in a field an override set is the override's; failing that, one beside it in its block.
        keys = list(values)
        exact = [k for k in keys if err.field and (err.field == k or err.field.startswith(k + "."))]
        near = [k for k in keys if err.field and err.field.startswith(k.rpartition(".")[0] + ".")]
        for key in (exact or near)[-1:]:
            raise ScenarioError(f"{source}: {key}", err.field, err.message) from None
        raise
