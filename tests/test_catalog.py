"""The shipped catalogs and their extension by user files and Hugging Face configs."""

from __future__ import annotations

import json

import pytest

from sim.catalog import load_catalog, model_from_hf_config
from sim.errors import CatalogError

CATALOG = load_catalog()

REQUIRED_GPUS = ["l4", "l40s", "h100_sxm", "h100_pcie", "h200_sxm", "a100_80gb_sxm", "a40", "t4", "rtx_4090"]
REQUIRED_MODELS = ["llama-2-7b", "llama-2-13b", "llama-3.1-8b", "mistral-7b", "codellama-34b", "qwen3-32b",
                   "llama-2-70b", "llama-3.1-70b"]


def test_required_gpus_and_models_present():
    assert set(REQUIRED_GPUS) <= set(CATALOG.gpus)
    assert set(REQUIRED_MODELS) <= set(CATALOG.models)


@pytest.mark.parametrize("gpu", REQUIRED_GPUS)
def test_every_gpu_has_sources_and_exactly_one_default_price(gpu):
    spec = CATALOG.gpus[gpu]
    assert spec.sources.get("specs")
    defaults = [p for p in CATALOG.prices_for(gpu) if p.default]
    assert len(defaults) == 1
    assert all(p.source for p in CATALOG.prices_for(gpu))


def test_spec_sheet_figures():
    l4, h100 = CATALOG.gpus["l4"], CATALOG.gpus["h100_sxm"]
    assert (l4.memory_bandwidth_gb_s, l4.bf16_tflops, l4.tdp_w) == (300, 121, 72)
    assert (h100.memory_bandwidth_gb_s, h100.bf16_tflops, h100.fp8_tflops) == (3350, 989, 1979)
    assert CATALOG.gpus["a100_80gb_sxm"].fp8_tflops is None


@pytest.mark.parametrize(("gpu", "provider", "usd", "per_instance"), [
    ("l4", "runpod", 0.44, 1), ("t4", "runpod", 0.35, 1), ("l40s", "runpod", 0.79, 1), ("h100_sxm", "runpod", 1.99, 1),
    ("a100_80gb_sxm", "lambda", 1.50, 1), ("l40s", "coreweave", 18.0, 8), ("h100_sxm", "coreweave", 49.24, 8),
])
def test_seed_prices_present(gpu, provider, usd, per_instance):
    prices = [p for p in CATALOG.prices_for(gpu) if p.provider == provider and p.usd_per_hour == usd]
    assert prices and prices[0].gpus_per_instance == per_instance


@pytest.mark.parametrize(("model", "billions"), [("llama-2-7b", 6.74), ("llama-2-13b", 13.0), ("llama-3.1-8b", 8.03),
                                                 ("mistral-7b", 7.24), ("llama-2-70b", 68.98),
                                                 ("llama-3.1-70b", 70.55), ("qwen3-32b", 32.8)])
def test_parameter_counts_match_published_sizes(model, billions):
    assert CATALOG.models[model].n_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_user_catalog_file_extends_and_overrides(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "gpus:\n  my_gpu:\n    name: My GPU\n    architecture: ada\n    sm_version: 89\n    sm_count: 10\n"
        "    memory_gib: 16\n    memory_bandwidth_gb_s: 100\n    bf16_tflops: 10\n    tdp_w: 50\n    idle_w: 5\n"
        "    interconnect: pcie_gen4\n    interconnect_gb_s: 32\n"
        "prices:\n  - {gpu: my_gpu, provider: me, tier: on_demand, usd_per_hour: 0.1, default: true}\n"
        "  - {gpu: l4, provider: runpod, tier: on_demand, instance: L4 pod, usd_per_hour: 0.01}\n")
    cat = load_catalog((extra,))
    assert "my_gpu" in cat.gpus and "l4" in cat.gpus
    assert [p.usd_per_hour for p in cat.prices_for("my_gpu")] == [0.1]


def test_bad_user_catalog_names_file_and_entry(tmp_path):
    extra = tmp_path / "bad.yaml"
    extra.write_text("gpus:\n  x:\n    name: X\n    architecture: volta\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml: gpus\.x\.architecture"):
        load_catalog((extra,))


def test_a_gpu_idling_above_its_tdp_is_refused(tmp_path):
    extra = tmp_path / "hot.yaml"
    extra.write_text(
        "gpus:\n  hot:\n    name: Hot\n    architecture: ada\n    sm_version: 89\n    sm_count: 10\n"
        "    memory_gib: 16\n    memory_bandwidth_gb_s: 100\n    bf16_tflops: 10\n    tdp_w: 72\n    idle_w: 1000\n"
        "    interconnect: pcie_gen4\n    interconnect_gb_s: 32\n")
    with pytest.raises(CatalogError, match=r"hot\.yaml: gpus\.hot.*idle_w: 1000 W is more than tdp_w \(72 W\)"):
        load_catalog((extra,))


def test_hugging_face_config(tmp_path):
    cfg = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
           "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 131072,
           "_name_or_path": "meta-llama/Llama-3.1-8B"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    spec = model_from_hf_config(path)
    assert spec.head_dim == 128 and spec.n_kv_heads == 8
    assert spec.n_params == CATALOG.models["llama-3.1-8b"].n_params


def test_hugging_face_config_errors(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(CatalogError, match=r"config\.json:1: not valid JSON"):
        model_from_hf_config(path)
    path.write_text(json.dumps({"hidden_size": 10}))
    with pytest.raises(CatalogError, match="missing field"):
        model_from_hf_config(path)
