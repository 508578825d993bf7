"""Load a scenario file: read YAML safely, apply ``--set`` overrides, resolve paths, validate, cross-check.

This is the one place user configuration enters. Every problem becomes a :class:`~sim.errors.ScenarioError`
naming the file and the dotted field, with the allowed values where there is a fixed set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from sim.catalog import load_catalog
from sim.cluster.deploy import plan_pools
from sim.cluster.maintenance import check_windows
from sim.cluster.router import ROUTERS
from sim.config import FittedWorkload, Scenario, ServeGenWorkload, TraceWorkload
from sim.errors import CatalogError, ScenarioError, unknown_name, with_input
from sim.limits import MAX_REQUESTS, MAX_SECONDS, MAX_WINDOWS
from sim.perf.kernel import Calibration
from sim.workload.source import fitted_no_span, servegen_empty_window, trace_arrays
from sim.workload.synthesis import expected_arrivals, read_servegen
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
    except yaml.YAMLError as err:
        raise ScenarioError(source, key, f"cannot parse value {raw!r} ({describe_yaml_error(err)})") from None
    if isinstance(value, str) and raw.strip()[:1] not in ("'", '"'):
        # YAML 1.1 reads 1e9 as a string; a number is what anyone means (unless the value was quoted: text)
        with contextlib.suppress(ValueError):
            value = float(value) if not value.strip().lstrip("+-").isdigit() else int(value)
    return assign(data, key, value, source)


def assign(data: dict, key: str, value, source: str) -> str | None:
    """Set the value at a dotted ``key`` of a scenario mapping in place (list items by index; missing mappings are
    made); :class:`ScenarioError` from ``source`` naming the key when the path cannot hold it. Returns the dotted
    path of the first mapping it had to make (None if the path was there): what is wrong below it is the
    override's."""
    parts = key.strip().split(".")
    if not all(parts):
        raise ScenarioError(source, key, "empty segment in the dotted key")
    node, created = data, None
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ScenarioError(source, ".".join(parts[: i + 1]), f"no list index {part} (length {len(node)})")
            node = node[int(part)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
                created = created or ".".join(parts[: i + 1])
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
    return created


def _owns(key: str, created: str | None, field: str) -> bool:
    """Whether a problem at ``field`` is the doing of the override of ``key`` (which made ``created``): the field is
    the key, inside it, inside what it made, or a block holding it (a block's own check, e.g. ``pools.l4``)."""
    if not field:
        return False
    owned = [key] + ([created] if created else [])
    return (any(field == k or field.startswith(k + ".") for k in owned)
            or (field.count(".") >= 1 and key.startswith(field + ".")))


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
            perf = pool.get("perf") if isinstance(pool, dict) else None
            if isinstance(perf, dict) and "calibration_file" in perf:
                perf["calibration_file"] = fix(perf["calibration_file"])


def _members(annotation) -> list:
    """The types a field's annotation may hold: ``Optional``, ``Annotated`` and unions unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(annotation) if a is not type(None) for m in _members(a)]
    return [annotation]


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """Field names of the schema model found by following a pydantic error location (mapping keys, list indexes and
    the tags of union members included)."""
    current: list = [model]
    for part in loc:
        following = []
        for node in current:
            origin = typing.get_origin(node)
            if isinstance(node, type) and issubclass(node, BaseModel):
                info = node.model_fields.get(part) or next(
                    (f for f in node.model_fields.values() if f.alias == part), None)
                if info is not None:
                    following += _members(info.annotation)
                elif any(getattr(f, "default", None) == part for f in node.model_fields.values()):
                    following.append(node)  # the location names the tag of the union member that was tried
            elif origin is dict:
                following += _members(typing.get_args(node)[1])
            elif origin in (tuple, list) and isinstance(part, int):
                following += _members(typing.get_args(node)[0])
        current = following
    models = [m for m in current if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) != 1:
        return None
    fields = models[0].model_fields
    names = [f.alias or n for n, f in fields.items()]
    # The kind of block first (a Literal tag such as type, process, dist or a perf model), then its fields.
    tags = [f.alias or n for n, f in fields.items() if typing.get_origin(f.annotation) is typing.Literal
            and n in ("type", "process", "dist", "model", "policy", "mode")]
    return tags + [n for n in names if n not in tags]


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
    elif kind == "too_short":
        least = err.get("ctx", {}).get("min_length", 1)
        msg = f"needs at least {least} entr{'y' if least == 1 else 'ies'}, got none" if not err.get("input") else (
            f"needs at least {least} entries, got {len(err['input'])}")
    elif kind == "string_too_short":
        msg = "must not be empty"
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
        # A block's check may name the field it is about first ("duration_s: ..."); that is the field then.
        sub = re.match(r"([A-Za-z_]\w*(?:\.[\w-]+)*): ", msg)
        if sub:
            field = f"{field}.{sub.group(1)}" if field else sub.group(1)
            msg = msg[sub.end():]
    else:
        msg = with_input(msg, err.get("input"))
    return field, msg


def _json_keys(node):
    """``node`` with the mapping keys JSON cannot hold (YAML dates and timestamps) turned to text, as ``default=str``
    turns such values: ``2024-01-01: x`` is then an unknown field, not a crash."""
    if isinstance(node, dict):
        return {k if k is None or isinstance(k, str | int | float) else str(k): _json_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_json_keys(v) for v in node]
    return node


def _is_seconds(name: str) -> bool:
    """Whether a field holds seconds (``*_s``, and ``s`` of a fixed duration), not a rate (``*_per_s``, ``*_gb_s``)."""
    return name == "s" or (name.endswith("_s") and not name.endswith(("_per_s", "_gb_s")))


def _too_long(node, path: str = "") -> tuple[str, float] | None:
    """The first duration, time or period in a validated scenario above :data:`MAX_SECONDS`: (field, value)."""
    if isinstance(node, BaseModel):
        for name, info in type(node).model_fields.items():
            value = getattr(node, name)
            where = f"{path}.{info.alias or name}".lstrip(".")
            if _is_seconds(name) and isinstance(value, float | int) and not isinstance(value, bool):
                if value > MAX_SECONDS:
                    return where, value
            elif _is_seconds(name) and isinstance(value, tuple):
                for i, v in enumerate(value):
                    if isinstance(v, float | int) and v > MAX_SECONDS:
                        return f"{where}.{i}", v
            else:
                found = _too_long(value, where)
                if found:
                    return found
    elif isinstance(node, dict):
        for key, value in node.items():
            found = _too_long(value, f"{path}.{key}")
            if found:
                return found
    elif isinstance(node, tuple | list):
        for i, value in enumerate(node):
            found = _too_long(value, f"{path}.{i}")
            if found:
                return found
    return None


def _implied(error: dict, errors: list[dict]) -> bool:
    """An error that only follows from another (a list left too short because one of its items failed)."""
    loc = tuple(error["loc"])
    return error["type"] == "too_short" and any(len(o["loc"]) > len(loc) and tuple(o["loc"])[:len(loc)] == loc
                                                for o in errors)


def _check_synthetic(wl, at: str, source: str) -> None:
    """A fitted or ServeGen workload: its file or folder read and checked, and the traffic it makes bounded."""
    fitted = isinstance(wl, FittedWorkload)
    if not (Path.is_file if fitted else Path.is_dir)(Path(wl.path)):
        raise ScenarioError(source, f"{at}.path", f"{'trace file' if fitted else 'folder'} not found: {wl.path}")
    if fitted:
        arrays = read_trace(wl.format, wl.path, **wl.reader_options())
        span = float(arrays.arrival_s[-1])
        if span <= 0:
            raise ScenarioError(source, f"{at}.path", f"{wl.path}: {fitted_no_span(arrays)}")
        if span / wl.window_s > MAX_WINDOWS:
            raise ScenarioError(source, f"{at}.window_s", f"{wl.window_s:g} s cuts the trace's {span:g} s into "
                                f"{span / wl.window_s:.3g} windows; at most {MAX_WINDOWS:,} (use a longer window)")
        expected = len(arrays) * wl.rate_scale
    else:
        clients = read_servegen(wl.path, list(wl.clients) if wl.clients else None)
        if not clients:
            raise ScenarioError(source, f"{at}.path", "holds no ServeGen client (chunk-<client>-trace.csv files)")
        empty = servegen_empty_window(wl, clients)
        if empty:
            raise ScenarioError(source, f"{at}.start_s", f"{wl.path}: {empty}")
        # Every window is drawn (then cut to the time asked for): all of them count.
        expected = wl.rate_scale * sum(expected_arrivals(c.windows, 0.0, float("inf")) for c in clients)
    if expected > MAX_REQUESTS:
        raise ScenarioError(source, f"{at}.rate_scale", f"the workload would send about {expected:.3g} requests; at "
                            f"most {MAX_REQUESTS:,} per run (lower rate_scale, or the trace's rates)")


def validate_scenario(data: dict, source: str) -> Scenario:
    """Validate a scenario mapping (paths already resolved) and check its references against the catalog."""
    data = _json_keys(data)
    try:
        # Strict JSON-mode validation: a YAML boolean or a quoted string is not a number, while lists still
        # fill tuple fields and integers fill float fields.
        scenario = Scenario.model_validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as err:
        errors = err.errors()
        field, msg = _message(errors[0], data)
        extra = sum(not _implied(e, errors) for e in errors[1:])
        more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
        raise ScenarioError(source, field, msg + more) from None
    too_long = _too_long(scenario)
    if too_long:
        raise ScenarioError(source, too_long[0], f"{too_long[1]:g} s is more than {MAX_SECONDS:g} s (about 31 years), "
                            "the longest time a simulation can tell apart from a millisecond later; a wrong unit?")
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
    for name, pool in scenario.pools.items():
        if getattr(pool.perf, "calibration_file", None) is not None:
            file = pool.perf.calibration_file
            try:
                Calibration.read(file)
            except CatalogError as err:
                problem = str(err).removeprefix(f"{file}: ")
                raise ScenarioError(source, f"pools.{name}.perf.calibration_file", f"{file}: {problem}"
                                    if problem == str(err) else f"{problem}: {file}") from None
    served = {p.model for p in scenario.pools.values()}
    for i, (_, wl, _) in enumerate(scenario.traffic()):
        at = "workload" if i == 0 else f"classes.{i - 1}.workload"
        if isinstance(wl, FittedWorkload | ServeGenWorkload):
            _check_synthetic(wl, at, source)
        arrival = getattr(wl, "arrival", None)
        if arrival is not None and wl.num_requests is not None and wl.duration_s is None \
                and scenario.run.max_duration_s is None and arrival.expected_arrivals(MAX_SECONDS) < wl.num_requests:
            # Nothing else would end the run before the last arrival, decades of clock hours later.
            raise ScenarioError(source, f"{at}.arrival", f"{wl.num_requests:,} requests at {arrival.mean_rate_per_s:g} "
                                f"requests/s take more than {MAX_SECONDS:g} s (about 31 years) to arrive; a wrong "
                                "unit? (or set duration_s, or run.max_duration_s)")
        if isinstance(wl, TraceWorkload):
            if not Path(wl.path).is_file():
                raise ScenarioError(source, f"{at}.path", f"trace file not found: {wl.path}")
            arrays = trace_arrays(wl)  # reads (and checks) every row; the reader caches the arrays
            if len(arrays) == 0:
                span = f"lasting duration_s={wl.duration_s:g} s" if wl.duration_s is not None else "to the end"
                raise ScenarioError(source, f"{at}.start_s",
                                    f"the window from start_s={wl.start_s:g} s {span} holds no request of the trace")
            if len(arrays) * wl.rate_scale < 1:
                raise ScenarioError(source, f"{at}.rate_scale", f"{wl.rate_scale:g} keeps each of the window's "
                                    f"{len(arrays)} requests with that probability: less than one request expected "
                                    "(raise rate_scale, or take a longer window)")
            last = float(arrays.arrival_s[-1]) + wl.spread_s * wl.time_scale
            if last > MAX_SECONDS:
                raise ScenarioError(source, f"{at}.time_scale", f"{wl.time_scale:g} stretches the trace {wl.path} to "
                                    f"{last:.3g} s, more than {MAX_SECONDS:g} s (about 31 years); a wrong unit?")
        for key in ("prompt_tokens", "output_tokens"):
            dist = getattr(wl, key, None)
            if getattr(dist, "path", None):
                if not Path(dist.path).is_file():
                    raise ScenarioError(source, f"{at}.{key}.path", f"length file not found: {dist.path}")
                dist.values  # noqa: B018 - reads and checks every row now, not mid-run
        if getattr(getattr(wl, "prompt_tokens", None), "paired", False):
            raise ScenarioError(source, f"{at}.prompt_tokens.paired", "is for output_tokens only (it draws the rows "
                                "prompt_tokens drew); remove it here")
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
    deployment = plan_pools(scenario, catalog, source)
    if scenario.maintenance is not None:
        check_windows(scenario, deployment, source)
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
    if not isinstance(path, str | os.PathLike):
        raise ScenarioError("path", "", f"give the path of a scenario file, not a {type(path).__name__}")
    if isinstance(overrides, dict):  # its keys alone would be read as assignments
        raise ScenarioError("overrides", "", "give a list of 'dotted.key=value' strings, not a dict (for typed "
                            "values by key, use sim.scenario.load_scenario_with)")
    if isinstance(overrides, str | bytes) or not isinstance(overrides, Iterable):
        raise ScenarioError("overrides", "", f"give a list of 'dotted.key=value' strings, not a "
                            f"{type(overrides).__name__}")
    overrides = list(overrides)
    for item in overrides:
        if not isinstance(item, str):
            raise ScenarioError("overrides", "", f"each override is a 'dotted.key=value' string, not {item!r}")
    path = Path(path)
    data = read_yaml(path)
    created = [apply_override(data, assignment) for assignment in overrides]
    _resolve_paths(data, path.parent)
    try:
        return validate_scenario(data, str(path))
    except ScenarioError as err:
        # A problem in a field that an override set (or made) is the override's, not the file's.
        for assignment, made in reversed(list(zip(overrides, created, strict=True))):
            if _owns(assignment.partition("=")[0].strip(), made, err.field):
                message = err.message
                if "valid string" in message:  # 123, true or null where text was meant: YAML read it as such
                    key, _, value = assignment.partition("=")
                    if err.field == key.strip():
                        message += f" (--set values are read as YAML; for text, quote it: --set '{key}=\"{value}\"')"
                    else:  # an item inside a list or block: quoting the whole value would make it one string
                        message += " (--set values are read as YAML; quote the text inside it, e.g. [\"a\", \"b\"])"
                raise type(err)(f"--set {assignment}", err.field, message) from None
        if overrides:  # a rule across fields: the file and the overrides together broke it
            raise type(err)(err.source, err.field, err.message + " (with " + ", ".join(
                f"--set {a}" for a in overrides) + ")") from None
        raise


def load_scenario_with(path: str | Path, values: dict, source: str, seed: int | None = None,
                       values_base: str | Path | None = None) -> Scenario:
    """:func:`load_scenario` with typed overrides: ``values`` maps dotted keys to values (a sweep's arm); file paths
    among them are relative to ``values_base`` (the file that gave them; default: the scenario's folder); errors in a
    field an override set are reported from ``source``."""
    path = Path(path)
    data = read_yaml(path)
    _resolve_paths(data, path.parent)  # the scenario's own references, relative to it
    created = {key: assign(data, key, value, source) for key, value in values.items()}
    if seed is not None:
        data["seed"] = seed
    _resolve_paths(data, Path(values_base) if values_base is not None else path.parent)
    try:
        return validate_scenario(data, str(path))
    except ScenarioError as err:
        # A problem in a field an override set (or made) is the override's; failing that, one beside it in its block.
        # Where the field names the key (or lies inside it) the key is not repeated.
        keys = list(values)
        inside = [k for k in keys if err.field and (err.field == k or err.field.startswith(k + "."))]
        if inside:
            raise type(err)(source, err.field, err.message) from None
        owned = [k for k in keys if _owns(k, created[k], err.field)]
        near = [k for k in keys if err.field and err.field.startswith(k.rpartition(".")[0] + ".")]
        for key in (owned or near)[-1:]:
            raise type(err)(f"{source}: {key}", err.field, err.message) from None
        raise
