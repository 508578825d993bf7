"""Total cost of ownership: a GPU-hour bought in the cloud (on demand, spot, reserved) or owned, and the same tokens
bought from a hosted API.

Owning (``self_hosted``): the card's purchase price (the catalog's ``self_hosted`` price x 26,280 h, its 3-year
amortisation basis) times ``1 + server_overhead`` (server, network, rack), spread over ``years``; plus power at
``utilisation`` between the card's idle and TDP watts, times the PUE (cooling and power delivery), at ``usd_per_kwh``;
plus an optional licence per GPU-year (NVIDIA AI Enterprise: $4,500). Cloud tiers are catalog prices.

Break-even against an API that charges ``a`` dollars per output token (input tokens priced in at the workload's
ratio): with a replica's capacity ``c`` output tokens per month at the target utilisation and its monthly cost
``M``, and the fleet sized in fractions of a replica above a minimum of one, self-hosting costs ``M max(1, T / c)``
for ``T`` tokens a month and the API ``a T``. Self-hosting wins from ``T* = M / a`` on, if ``a >= M / c`` (its
marginal cost per token is below the API's); otherwise never.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

import pandas as pd
import yaml

from sim.catalog import Catalog, load_catalog

HOURS_PER_MONTH = 730.0
#: The catalog's self_hosted prices spread the card price over this many hours (3 years).
AMORTISATION_BASIS_H = 3 * 8760


@dataclass(frozen=True)
class Ownership:
    """Assumptions of owning GPUs (all editable)."""

    years: float = 3.0
    usd_per_kwh: float = 0.12
    pue: float = 1.4
    utilisation: float = 0.6  # average load, between idle and TDP watts
    server_overhead: float = 0.0  # server, network and rack as a fraction of the card price
    licence_usd_per_gpu_year: float = 0.0  # e.g. 4500 for NVIDIA AI Enterprise

    def __post_init__(self) -> None:
        values = (self.years, self.usd_per_kwh, self.pue, self.utilisation, self.server_overhead,
                  self.licence_usd_per_gpu_year)
        if not all(math.isfinite(v) for v in values) or self.years <= 0 or self.usd_per_kwh < 0 or self.pue < 1 or (
                not 0 <= self.utilisation <= 1) or self.server_overhead < 0 or self.licence_usd_per_gpu_year < 0:
            raise ValueError("years > 0, usd_per_kwh >= 0, pue >= 1, 0 <= utilisation <= 1, server_overhead >= 0 and "
                             "licence >= 0, all finite")


@cache
def api_prices() -> pd.DataFrame:
    """The hosted API price table (``sim/catalog/api_prices.yaml``): name, model, USD per M input/output, source."""
    text = resources.files("sim.catalog").joinpath("api_prices.yaml").read_text(encoding="utf-8")
    return pd.DataFrame(yaml.safe_load(text)["apis"])


def owned_usd_per_gpu_hour(gpu: str, own: Ownership = Ownership(), catalog: Catalog | None = None) -> dict:
    """An owned GPU's cost per hour, by part: ``capex``, ``power`` (cooling included by the PUE), ``licence``,
    ``total``; None where the catalog has no self_hosted price for ``gpu``."""
    catalog = catalog or load_catalog()
    spec = catalog.gpus[gpu]
    price = next((p for p in catalog.prices if p.gpu == gpu and p.tier == "self_hosted"), None)
    if price is None:
        return {"capex": None, "power": None, "licence": None, "total": None, "purchase_usd": None}
    purchase = price.usd_per_gpu_hour * AMORTISATION_BASIS_H
    capex = purchase * (1 + own.server_overhead) / (own.years * 8760)
    watts = spec.idle_w + own.utilisation * (spec.tdp_w - spec.idle_w)
    power = watts / 1000 * own.pue * own.usd_per_kwh
    licence = own.licence_usd_per_gpu_year / 8760
    return {"capex": capex, "power": power, "licence": licence, "total": capex + power + licence,
            "purchase_usd": purchase}


def gpu_hour_prices(gpu: str, own: Ownership = Ownership(), catalog: Catalog | None = None
                    ) -> dict[str, tuple[float, str]]:
    """$/GPU-hour of ``gpu`` by how it is paid, with who charges it: for each cloud tier the catalog's default
    provider's price where it has one in that tier, else the cheapest; and owned. Tiers without a price are left
    out."""
    catalog = catalog or load_catalog()
    rows = [p for p in catalog.prices if p.gpu == gpu]
    default = next((p.provider for p in rows if p.default), None)
    out = {}
    for tier in ("on_demand", "spot", "reserved"):
        prices = sorted((p for p in rows if p.tier == tier), key=lambda p: (p.provider != default, p.usd_per_gpu_hour))
        if prices:
            out[tier] = (prices[0].usd_per_gpu_hour, prices[0].provider)
    owned = owned_usd_per_gpu_hour(gpu, own, catalog)["total"]
    if owned is not None:
        out["self_hosted"] = (owned, f"owned {own.years:g} y")
    return out


def api_usd_per_output_token(usd_per_m_input: float, usd_per_m_output: float, input_per_output: float) -> float:
    """An API's price per output token, the input tokens that come with it included."""
    return (usd_per_m_output + input_per_output * usd_per_m_input) / 1e6


def break_even_tokens_per_month(replica_usd_per_month: float, replica_tokens_per_month: float,
                                api_usd_per_token: float) -> float:
    """Output tokens a month from which self-hosting costs less than the API (module docstring); inf if never."""
    if replica_tokens_per_month <= 0 or api_usd_per_token <= 0:
        return math.inf
    if api_usd_per_token < replica_usd_per_month / replica_tokens_per_month:
        return math.inf
    return replica_usd_per_month / api_usd_per_token


def self_hosting_usd_per_month(tokens_per_month: float, replica_usd_per_month: float,
                               replica_tokens_per_month: float) -> float:
    """Self-hosting cost of ``tokens_per_month`` output tokens: at least one replica, fractions above it."""
    return replica_usd_per_month * max(1.0, tokens_per_month / replica_tokens_per_month)


def break_even_table(deployments: pd.DataFrame, own: Ownership = Ownership(), target_utilisation: float = 0.6,
                     input_per_output: float = 2.0, apis: pd.DataFrame | None = None) -> pd.DataFrame:
    """For each deployment (rows of :func:`sim.review.gpu_comparison` that fit) and each way to pay its GPUs: the
    $/GPU-hour, $ per million output tokens at ``target_utilisation`` of its TPOT-bound capacity, and the output
    tokens a month above which it beats each API of ``apis`` (default: :func:`api_prices`)."""
    apis = api_prices() if apis is None else apis
    rows = []
    for _, d in deployments[deployments["fits"]].iterrows():
        tp = int(d["tensor_parallel"])
        tokens_month = d["slo_tok_s_per_gpu"] * tp * 3600 * HOURS_PER_MONTH * target_utilisation
        for tier, (usd_h, provider) in gpu_hour_prices(d["gpu"], own).items():
            month = usd_h * tp * HOURS_PER_MONTH
            row = {"model": d["model"], "gpu": d["gpu"], "precision": d["precision"], "tensor_parallel": tp,
                   "paid": tier, "provider": provider, "usd_per_gpu_hour": usd_h,
                   "usd_per_m_output_tokens": month / tokens_month * 1e6 if tokens_month else math.inf}
            for _, api in apis.iterrows():
                a = api_usd_per_output_token(api["usd_per_m_input"], api["usd_per_m_output"], input_per_output)
                row[f"break_even_vs_{api['name']}"] = break_even_tokens_per_month(month, tokens_month, a)
            rows.append(row)
    return pd.DataFrame(rows)


def api_cost_of_run(requests: pd.DataFrame, apis: pd.DataFrame | None = None) -> pd.DataFrame:
    """What a run's finished requests would have cost on each hosted API (their prompt and output tokens)."""
    apis = api_prices() if apis is None else apis
    done = requests[requests["status"] == "finished"]
    tin, tout = float(done["prompt_tokens"].sum()), float(done["output_tokens"].sum())
    return pd.DataFrame([{"api": a["name"], "usd": (tin * a["usd_per_m_input"] + tout * a["usd_per_m_output"]) / 1e6}
                         for _, a in apis.iterrows()])


__all__ = ["Ownership", "api_cost_of_run", "api_prices", "break_even_table",
           "break_even_tokens_per_month", "gpu_hour_prices", "owned_usd_per_gpu_hour", "self_hosting_usd_per_month"]
