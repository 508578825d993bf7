"""Catalogs of GPUs, prices and model architectures: data in YAML, validated here.

The package ships ``gpus.yaml`` (spec sheets and prices, each figure with its source) and ``models.yaml``.
A scenario may add its own files with the same schema (``catalog: {gpus: FILE, models: FILE}``); their
entries add to or replace the shipped ones. A pool may also name a local Hugging Face ``config.json``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sim.errors import CatalogError, as_written, unknown_name, with_input
from sim.yamlio import describe_yaml_error, load_yaml

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

Architecture = Literal["turing", "ampere", "ada", "hopper", "blackwell"]
Interconnect = Literal["pcie_gen3", "pcie_gen4", "pcie_gen5", "nvlink3", "nvlink4", "nvlink5", "nvlink_bridge"]
PriceTier = Literal["on_demand", "spot", "reserved", "self_hosted"]


class MigProfile(BaseModel):
    """One MIG GPU-instance profile: its share of the GPU and where it may be placed (memory-slot starts)."""

    model_config = _FROZEN
    memory_slices: int = Field(gt=0)
    compute_slices: int = Field(gt=0)
    sm_count: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    max_instances: int = Field(gt=0)
    starts: tuple[int, ...] = Field(min_length=1)


class VgpuProfile(BaseModel):
    """One time-sliced C-series vGPU profile: its frame buffer and how many fit on one GPU (reference Table 3.4;
    ``max_mixed`` is the lower count that applies when profiles of different sizes share the GPU, VG-9)."""

    model_config = _FROZEN
    memory_gib: float = Field(gt=0)
    max_equal: int = Field(gt=0)
    max_mixed: int = Field(gt=0)


class GpuSpec(BaseModel):
    """Spec-sheet figures of one GPU model (dense tensor peaks; bandwidth in 1e9 bytes/s)."""

    model_config = _FROZEN
    key: str = ""
    name: str
    architecture: Architecture
    sm_version: int = Field(gt=0)
    sm_count: int = Field(gt=0)
    memory_gib: float = Field(gt=0, le=100_000)
    memory_bandwidth_gb_s: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0, description="dense 16-bit tensor peak (fp16 where no bf16)")
    fp8_tflops: float | None = Field(default=None, gt=0)
    int8_tops: float | None = Field(default=None, gt=0)
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(ge=0)
    interconnect: Interconnect
    interconnect_gb_s: float = Field(gt=0, description="per GPU, one direction")
    mig_memory_slices: int = Field(default=0, ge=0, description="MIG memory slices (0: no MIG)")
    mig_profiles: dict[str, MigProfile] = Field(default_factory=dict, description="MIG profiles by name")
    vgpu_profiles: dict[str, VgpuProfile] = Field(default_factory=dict, description="time-sliced vGPU profiles")
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _power(self) -> GpuSpec:
        if self.idle_w > self.tdp_w:  # energy interpolates from idle to TDP with load: idle above it is a typo
            raise ValueError(f"idle_w: {self.idle_w:g} W is more than tdp_w ({self.tdp_w:g} W)")
        return self

    @model_validator(mode="after")
    def _profiles_fit(self) -> GpuSpec:
        # Profiles are named by nominal size (L40S-48C on a 48 GB = 44.99 GiB card): GB are allowed for GiB here.
        most = self.memory_gib * 2**30 / 1e9
        for kind, profiles in (("mig_profiles", self.mig_profiles), ("vgpu_profiles", self.vgpu_profiles)):
            for name, profile in profiles.items():
                if profile.memory_gib > most + 1e-9:
                    raise ValueError(f"{kind}.{name}.memory_gib: {profile.memory_gib:g} is more than the GPU's whole "
                                     f"memory ({self.memory_gib:g} GiB = {most:.4g} GB)")
        return self

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    def has_tensor_cores(self, compute_dtype: str) -> bool:
        """Whether the GPU has tensor cores for ``compute_dtype`` (bf16, fp8, int8)."""
        return {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops, "int8": self.int8_tops}[compute_dtype] is not None

    def tensor_flops(self, compute_dtype: str) -> float:
        """Dense tensor peak in FLOP/s for ``compute_dtype`` (bf16, fp8, int8)."""
        peak = {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops, "int8": self.int8_tops}[compute_dtype]
        if peak is None:
            raise ValueError(f"{self.name} has no {compute_dtype} tensor cores")
        return peak * 1e12


class Price(BaseModel):
    """One price observation: a whole instance of ``gpus_per_instance`` GPUs per hour."""

    model_config = _FROZEN
    gpu: str
    provider: str
    tier: PriceTier
    instance: str = ""
    gpus_per_instance: int = Field(default=1, gt=0)
    usd_per_hour: float = Field(ge=0)
    date: str = ""
    source: str = ""
    default: bool = False

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus_per_instance


class ModelSpec(BaseModel):
    """Architecture of a decoder-only transformer (GQA attention, gated MLP)."""

    model_config = _FROZEN
    key: str = ""
    name: str
    n_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_context_tokens: int = Field(gt=0)
    tie_word_embeddings: bool = False
    source: str = ""

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        return self

    @property
    def n_params(self) -> int:
        """Parameter count: embeddings, attention, gated MLP, RMS norms and (untied) LM head."""
        h, d = self.hidden_size, self.head_dim
        attention = h * self.n_heads * d * 2 + h * self.n_kv_heads * d * 2  # q, o; k, v
        mlp = 3 * h * self.intermediate_size
        per_layer = attention + mlp + 2 * h
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.n_layers * per_layer + embeddings + h


class Catalog(BaseModel):
    """GPUs, prices and models available to a scenario."""

    model_config = _FROZEN
    gpus: dict[str, GpuSpec]
    prices: tuple[Price, ...]
    models: dict[str, ModelSpec]

    def prices_for(self, gpu: str) -> list[Price]:
        return [p for p in self.prices if p.gpu == gpu]


def _read_yaml(path: Path | str, text: str | None = None) -> dict:
    try:
        data = load_yaml(text if text is not None else Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise CatalogError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise CatalogError(f"{path}: cannot read catalog file: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise CatalogError(f"{path}: not valid YAML: {describe_yaml_error(err)}") from None
    if data is None:
        raise CatalogError(f"{path}: empty file; a catalog file is a mapping with keys gpus, prices or models")
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: a catalog file must be a mapping with keys gpus, prices or models")
    unknown = set(data) - {"gpus", "prices", "models"}
    if unknown:
        raise CatalogError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: gpus, prices, models")
    return data


def _problem(schema: type[BaseModel], error: dict) -> tuple[str, str]:
    """(dotted location, message) of a pydantic error on a catalog entry, worded as the scenario's errors are."""
    loc = [str(p) for p in error["loc"]]
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = [n for n in schema.model_fields if n != "key"] if len(loc) == 1 else []
        msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif error["type"] == "missing":
        msg = "required field is missing"
    elif error["type"] == "value_error":
        head, sep, rest = msg.partition(": ")
        if sep and " " not in head:  # the check names its field first
            loc, msg = [*loc, head], rest
    else:
        msg = with_input(msg, error.get("input"))
    return ".".join(loc), msg


def _validate(path: Path | str, data: dict) -> tuple[dict[str, GpuSpec], list[Price], dict[str, ModelSpec]]:
    gpus, prices, models = {}, [], {}
    blocks = (("gpus", dict, GpuSpec), ("prices", list, Price), ("models", dict, ModelSpec))
    for block, kind, schema in blocks:
        entries = data.get(block) or kind()
        if not isinstance(entries, kind):
            raise CatalogError(f"{path}: {block}: expected a {'mapping of names to' if kind is dict else 'list of'} "
                               f"entries, got {type(entries).__name__}")
        for key, body in entries.items() if kind is dict else enumerate(entries):
            where = f"{block}.{key}"
            if not isinstance(body, dict):
                raise CatalogError(f"{path}: {where}: expected a mapping of fields, got {type(body).__name__}")
            try:
                entry = schema(**body) if kind is list else schema(**{**body, "key": key})
            except ValidationError as err:
                loc, msg = _problem(schema, err.errors()[0])
                raise CatalogError(f"{path}: {where}{'.' + loc if loc else ''}: {msg}") from None
            if block == "gpus":
                gpus[key] = entry
            elif block == "prices":
                prices.append(entry)
            else:
                models[key] = entry
    return gpus, prices, models


@cache
def _shipped() -> Catalog:
    gpus, prices, models = {}, [], {}
    for name in ("gpus.yaml", "models.yaml"):
        text = resources.files("sim.catalog").joinpath(name).read_text(encoding="utf-8")
        g, p, m = _validate(name, _read_yaml(name, text))
        gpus.update(g)
        prices.extend(p)
        models.update(m)
    return Catalog(gpus=gpus, prices=tuple(prices), models=models)


def load_catalog(extra_files: tuple[Path, ...] = ()) -> Catalog:
    """The shipped catalog, extended (or overridden entry by entry) by ``extra_files``.

    Raises
    ------
    CatalogError
        If a file cannot be read or an entry is invalid.
    """
    base = _shipped()
    gpus, prices, models = dict(base.gpus), list(base.prices), dict(base.models)
    for path in extra_files:
        g, p, m = _validate(path, _read_yaml(path))
        gpus.update(g)
        models.update(m)
        for i, price in enumerate(p):
            if price.gpu not in gpus:
                raise CatalogError(f"{path}: prices.{i}.gpu: {unknown_name('GPU', price.gpu, gpus)} (a price is for "
                                   "a GPU of the catalog, shipped or in this file)")
        # A user's price for (gpu, provider, tier, instance) replaces the shipped one.
        keys = {(q.gpu, q.provider, q.tier, q.instance) for q in p}
        prices = [q for q in prices if (q.gpu, q.provider, q.tier, q.instance) not in keys] + p
    return Catalog(gpus=gpus, prices=tuple(prices), models=models)


#: ModelSpec field -> Hugging Face config.json key, to name the user's field in errors.
HF_NAMES = {
    "n_layers": "num_hidden_layers", "hidden_size": "hidden_size", "n_heads": "num_attention_heads",
    "n_kv_heads": "num_key_value_heads", "head_dim": "head_dim", "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size", "max_context_tokens": "max_position_embeddings",
}


#: config.json keys that mark a mixture-of-experts model (Mixtral, Qwen-MoE, DeepSeek, OLMoE, Llama 4, gpt-oss):
#: ModelSpec is dense, so such a model would be sized as one expert's worth of weights and FLOPs.
HF_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_experts_per_tok",
               "num_experts_per_token", "experts_per_token", "n_shared_experts", "moe_intermediate_size",
               "shared_expert_intermediate_size")


def _json_value(value) -> str:
    """``value`` as the user wrote it in JSON, for "got ..." (an object or array is named, not repeated)."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return as_written(value)


def _hf_int(path: Path, cfg: dict, key: str, optional: bool = False) -> int | None:
    """``cfg[key]`` as a positive integer; None where ``optional`` and the key is absent or null."""
    value = cfg.get(key)
    if value is None and optional:
        return None
    # A whole float (4096.0, 1e6) is the integer it spells, as in scenario files; a bool is not a number.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CatalogError(f"{path}: {key} must be a positive integer, got {_json_value(value)}")
    return value


def model_from_hf_config(path: Path | str) -> ModelSpec:
    """Read a model architecture from a local Hugging Face ``config.json``.

    Uses ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads`` (defaults to
    the head count), ``head_dim`` (defaults to hidden / heads), ``intermediate_size``, ``vocab_size``,
    ``max_position_embeddings`` and ``tie_word_embeddings``. Mixture-of-experts configs are rejected: only dense
    models are modelled.
    """
    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"{path}: cannot read model config: {err}") from None
    except json.JSONDecodeError as err:
        raise CatalogError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    if not isinstance(cfg, dict):
        raise CatalogError(f"{path}: a Hugging Face config.json must be a JSON object")
    top = cfg
    text = cfg.get("text_config")  # multimodal configs nest the language model
    if text is not None:
        if not isinstance(text, dict):
            raise CatalogError(f"{path}: text_config must be a JSON object, got {_json_value(text)}")
        cfg = text
    # Experts may be declared at either level (Llama 4 nests them); 0 or null is how some dense configs say "none".
    both = {**top, **cfg}
    moe = [k for k in HF_MOE_KEYS if both.get(k) not in (None, 0)]
    if moe:
        found = ", ".join(f"{k} = {_json_value(both[k])}" for k in moe)
        raise CatalogError(f"{path}: {moe[0]}: mixture-of-experts models are not modelled, dense models only "
                           f"(found {found})")
    required = ["num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"]
    missing = [k for k in required if k not in cfg]
    if missing:
        raise CatalogError(f"{path}: missing field(s) {missing} needed for a decoder-only transformer")
    heads = _hf_int(path, cfg, "num_attention_heads")
    hidden = _hf_int(path, cfg, "hidden_size")
    sizes = {k: _hf_int(path, cfg, k) for k in ("num_hidden_layers", "intermediate_size", "vocab_size")}
    kv_heads = _hf_int(path, cfg, "num_key_value_heads", optional=True) or heads
    head_dim = _hf_int(path, cfg, "head_dim", optional=True)
    context = _hf_int(path, cfg, "max_position_embeddings", optional=True) or 4096
    if heads % kv_heads:
        raise CatalogError(f"{path}: num_key_value_heads: num_attention_heads ({heads}) must be a multiple of "
                           "num_key_value_heads")
    if head_dim is None:
        # hidden // heads would silently drop the remainder and size every attention matrix wrong.
        if hidden % heads:
            raise CatalogError(f"{path}: hidden_size ({hidden}) must be a multiple of num_attention_heads ({heads}) "
                               "when head_dim is not given")
        head_dim = hidden // heads
    tied = cfg.get("tie_word_embeddings")
    if tied is not None and not isinstance(tied, bool):  # bool("false") is True
        raise CatalogError(f"{path}: tie_word_embeddings must be true or false, got {_json_value(tied)}")
    name = cfg.get("_name_or_path") or top.get("_name_or_path")
    try:
        return ModelSpec(
            key=str(path),
            name=name if isinstance(name, str) else path.parent.name or path.stem,
            n_layers=sizes["num_hidden_layers"],
            hidden_size=hidden,
            n_heads=heads,
            n_kv_heads=kv_heads,
            head_dim=head_dim,
            intermediate_size=sizes["intermediate_size"],
            vocab_size=sizes["vocab_size"],
            max_context_tokens=context,
            tie_word_embeddings=bool(tied),
            source=f"Hugging Face config {path}",
        )
    except ValidationError as err:  # every field was checked above; this names anything a later check adds
        first = err.errors()[0]
        loc = HF_NAMES.get(".".join(map(str, first["loc"])), ".".join(map(str, first["loc"])))
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] != "value_error":
            msg = with_input(msg, first.get("input"))
        raise CatalogError(f"{path}: {loc + ': ' if loc else ''}{msg}") from None
