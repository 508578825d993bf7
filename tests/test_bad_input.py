"""Bad input gets one clear line, never a traceback or a silently wrong result.

Every case runs ``fleetsim run FILE --quiet`` in-process and checks: exit status 2; exactly one line on stderr,
starting ``fleetsim: error: ``; the line names the file, the field (``pools.l4.gpu``) or the line (``trace.csv:4``),
and says what is allowed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from sim.cli import main
from sim.scenario import load_scenario

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad_inputs"
ROOT = HERE.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"

#: A small valid scenario; each case below breaks one thing in it.
BASE = {
    "name": "bad-input",
    "workload": {
        "type": "open_loop",
        "arrival": {"process": "poisson", "rate_per_s": 5.0},
        "num_requests": 20,
        "prompt_tokens": {"dist": "uniform", "low": 10, "high": 100},
        "output_tokens": {"dist": "fixed", "tokens": 10},
    },
    "pools": {"l4": {"gpu": "l4", "model": "llama-3.1-8b", "replicas": 1, "engine": {"max_model_len": 4096}}},
}

DELETE = "<delete>"

TRACE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW1 = "2023-11-16 18:15:46.6805900,374,44\n"
ROW2 = "2023-11-16 18:15:50.9951690,396,109\n"
ROW3 = "2023-11-16 18:15:51.0000000,120,30\n"

#: A Llama-like Hugging Face config.json (Llama-3.2-1B's shape).
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}


# --------------------------------------------------------------------------------------------- helpers


def edited(edits: dict) -> dict:
    """:data:`BASE` with ``{"dotted.path": value}`` edits applied; the value :data:`DELETE` removes the key."""
    data = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value == DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def write_scenario(tmp_path: Path, data, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``fleetsim ARGV`` in-process: (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(rc: int, err: str) -> str:
    """The single error line, after checking the exit status and the shape of stderr."""
    assert "Traceback" not in err, err
    assert rc == 2, f"exit status {rc}, stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].startswith("fleetsim: error: "), lines[0]
    return lines[0]


def assert_names(line: str, path: Path | str, field: str, hints: tuple[str, ...]) -> None:
    """``line`` names ``path``, then ``field`` (as ``PATH: FIELD:`` or ``PATH: FIELD.sub``), and every hint."""
    if field:
        assert re.search(rf"{re.escape(str(path))}: {re.escape(field)}[.:]", line), (path, field, line)
    else:
        assert f"{path}: " in line, (path, line)
    for hint in hints:
        assert hint in line, (hint, line)


def run_bad(capsys, path: Path, *extra) -> str:
    rc, _, err = cli(capsys, "run", path, "--quiet", *extra)
    return error_line(rc, err)


def test_base_scenario_is_valid(tmp_path):
    """The cases below fail for the reason they name, not because the base is broken."""
    load_scenario(write_scenario(tmp_path, BASE))


# ------------------------------------------------------------------------------------- scenario fields

LOGNORMAL = {"dist": "lognormal", "mean": 100, "cv": 1.0}
GPU_LIST = ("allowed: ", "a100_80gb_sxm", "h100_sxm", "l4", "l40s", "t4")
TOO_BIG = ("GiB", "use a larger GPU, more tensor parallelism or a lower precision")

SCENARIO_CASES = [
    # missing required fields
    pytest.param({"workload": DELETE}, "workload", ("required field is missing",), id="missing-workload"),
    pytest.param({"pools": DELETE}, "pools", ("required field is missing",), id="missing-pools"),
    pytest.param({"pools.l4.gpu": DELETE}, "pools.l4.gpu", ("required field is missing",), id="missing-gpu"),
    pytest.param({"pools.l4.model": DELETE}, "pools.l4.model", ("required field is missing",), id="missing-model"),
    pytest.param({"workload.arrival": DELETE}, "workload.arrival", ("required field is missing",),
                 id="missing-arrival"),
    pytest.param({"workload.output_tokens": DELETE}, "workload.output_tokens", ("required field is missing",),
                 id="missing-output-tokens"),
    pytest.param({"workload.type": DELETE}, "workload", ("missing 'type'",), id="missing-workload-type"),
    pytest.param({"workload.num_requests": DELETE}, "workload", ("give num_requests or duration_s",),
                 id="no-num-requests-nor-duration"),
    pytest.param({"workload": {"type": "closed_loop", "num_requests": 5,
                               "prompt_tokens": {"dist": "fixed", "tokens": 5},
                               "output_tokens": {"dist": "fixed", "tokens": 5}}},
                 "workload.clients", ("required field is missing",), id="closed-loop-missing-clients"),
    # wrong types
    pytest.param({"pools.l4.replicas": "two"}, "pools.l4.replicas", ("valid integer",), id="replicas-two"),
    pytest.param({"pools.l4.replicas": 1.5}, "pools.l4.replicas", ("valid integer",), id="replicas-fractional"),
    pytest.param({"workload.arrival.rate_per_s": "fast"}, "workload.arrival.rate_per_s", ("valid number",),
                 id="rate-fast"),
    pytest.param({"pools": ["l4"]}, "pools", ("Input should be an object",), id="pools-is-list"),
    pytest.param({"pools.l4": "l4"}, "pools.l4", ("Input should be an object",), id="pool-is-string"),
    pytest.param({"name": 5}, "name", ("valid string",), id="name-not-string"),
    pytest.param({"catalog_files": "extra.yaml"}, "catalog_files", ("Input should be a valid array",),
                 id="catalog-files-not-list"),
    # unknown fields, with the allowed list
    pytest.param({"colour": "red"}, "colour",
                 ("unknown field; allowed: name, seed, catalog_files, workload, pools, router, slo, run",),
                 id="unknown-top-field"),
    pytest.param({"pools.l4.gpus": 2}, "pools.l4.gpus", ("unknown field; allowed: ", "gpu", "tensor_parallel"),
                 id="unknown-pool-field"),
    pytest.param({"pools.l4.engine.max_seqs": 8}, "pools.l4.engine.max_seqs",
                 ("unknown field; allowed: ", "max_num_seqs", "gpu_memory_utilization"), id="unknown-engine-field"),
    pytest.param({"workload.arrival.rate": 3}, "workload.arrival.rate",
                 ("unknown field; allowed: process, rate_per_s",), id="unknown-arrival-field"),
    pytest.param({"workload.prompt_tokens": {**LOGNORMAL, "maxtokens": 9}}, "workload.prompt_tokens.maxtokens",
                 ("unknown field; allowed: dist, mean, cv, max_tokens",), id="unknown-length-field-aliases"),
    pytest.param({"workload": {"type": "trace", "path": "t.csv", "rate": 2}}, "workload.rate",
                 ("unknown field; allowed: type, path, format",), id="unknown-trace-field"),
    # unknown names: the choices are listed
    pytest.param({"pools.l4.gpu": "h100"}, "pools.l4.gpu",
                 ("unknown GPU 'h100'", "did you mean 'h100_sxm'?", *GPU_LIST), id="unknown-gpu-close"),
    pytest.param({"pools.l4.gpu": "tpu_v5"}, "pools.l4.gpu", ("unknown GPU 'tpu_v5'", *GPU_LIST), id="unknown-gpu"),
    pytest.param({"pools.l4.model": "llama-3-8b"}, "pools.l4.model",
                 ("unknown model 'llama-3-8b'", "did you mean 'llama-3.1-8b'?", "llama-2-7b", "qwen3-32b",
                  "config.json"), id="unknown-model"),
    pytest.param({"router": {"policy": "round_robbin"}}, "router.policy",
                 ("unknown router 'round_robbin'", "did you mean 'round_robin'?", "least_outstanding", "jsq_tokens"),
                 id="unknown-router"),
    pytest.param({"pools.l4.engine.scheduler": "fcfs"}, "pools.l4.engine.scheduler",
                 ("unknown scheduler 'fcfs'", "vllm_v1"), id="unknown-scheduler"),
    pytest.param({"workload.arrival": {"process": "poison", "rate_per_s": 2}}, "workload.arrival",
                 ("unknown process 'poison'", "did you mean 'poisson'?", "gamma", "constant", "piecewise", "diurnal"),
                 id="unknown-arrival-process"),
    pytest.param({"workload.prompt_tokens": {"dist": "normal", "mean": 3}}, "workload.prompt_tokens",
                 ("unknown dist 'normal'", "fixed", "uniform", "lognormal", "geometric", "empirical"),
                 id="unknown-length-dist"),
    pytest.param({"workload.type": "openloop"}, "workload",
                 ("unknown type 'openloop'", "did you mean 'open_loop'?", "closed_loop", "trace"),
                 id="unknown-workload-type"),
    pytest.param({"pools.l4.precision": "fp4"}, "pools.l4.precision", ("'bf16'", "'fp16'", "'fp8'", "'int8'", "'int4'"),
                 id="unknown-precision"),
    pytest.param({"pools.l4.kv_cache_dtype": "int8"}, "pools.l4.kv_cache_dtype", ("'auto'", "'bf16'", "'fp8'"),
                 id="unknown-kv-cache-dtype"),
    pytest.param({"pools.l4.perf": {"model": "magic"}}, "pools.l4.perf",
                 ("unknown model 'magic'", "roofline", "constant"),
                 id="unknown-perf-model"),
    pytest.param({"pools.l4.price": {"tier": "cheap"}}, "pools.l4.price.tier", ("'on_demand'", "'spot'", "'reserved'"),
                 id="unknown-price-tier"),
    pytest.param({"workload": {"type": "trace", "path": "t.csv", "format": "sharegpt"}}, "workload.format",
                 ("'azure'",), id="unknown-trace-format"),
    # out-of-range numbers
    pytest.param({"workload.arrival.rate_per_s": -1}, "workload.arrival.rate_per_s", ("greater than 0",),
                 id="rate-negative"),
    pytest.param({"workload.arrival.rate_per_s": 0}, "workload.arrival.rate_per_s", ("greater than 0",),
                 id="rate-zero"),
    pytest.param({"pools.l4.replicas": -1}, "pools.l4.replicas", ("greater than or equal to 0",),
                 id="replicas-negative"),
    pytest.param({"pools.l4.replicas": 0}, "pools", ("every pool has 0 replicas",), id="replicas-all-zero"),
    pytest.param({"pools": {}}, "pools", ("at least 1 item",), id="pools-empty"),
    pytest.param({"pools.l4.tensor_parallel": 0}, "pools.l4.tensor_parallel", ("greater than 0",), id="tp-zero"),
    pytest.param({"workload.prompt_tokens": {**LOGNORMAL, "max_tokens": 0}}, "workload.prompt_tokens.max_tokens",
                 ("greater than 0",), id="max-tokens-zero"),
    pytest.param({"workload.output_tokens.tokens": 0}, "workload.output_tokens.tokens", ("greater than 0",),
                 id="fixed-tokens-zero"),
    pytest.param({"workload.prompt_tokens": {"dist": "uniform", "low": 100, "high": 10}}, "workload.prompt_tokens",
                 ("high (10) must be >= low (100)",), id="uniform-low-above-high"),
    pytest.param({"workload.num_requests": 0}, "workload.num_requests", ("greater than 0",), id="num-requests-zero"),
    pytest.param({"pools.l4.engine.gpu_memory_utilization": 1.5}, "pools.l4.engine.gpu_memory_utilization",
                 ("less than or equal to 1",), id="gpu-memory-utilization-1.5"),
    pytest.param({"seed": -1}, "seed", ("greater than or equal to 0",), id="seed-negative"),
    pytest.param({"slo": {"ttft_s": -1}}, "slo.ttft_s", ("greater than 0",), id="slo-negative"),
    pytest.param({"pools.l4.price": {"usd_per_gpu_hour": -1}}, "pools.l4.price.usd_per_gpu_hour",
                 ("greater than or equal to 0",), id="price-negative"),
    pytest.param({"workload.arrival": {"process": "piecewise", "times_s": [5, 10], "rates_per_s": [1, 2]}},
                 "workload.arrival", ("times_s must start at 0",), id="piecewise-not-from-zero"),
    # impossible deployments
    pytest.param({"pools.l4.model": "llama-3.1-70b"}, "pools.l4.model",
                 ("Llama-3.1-70B in bf16", "NVIDIA L4", *TOO_BIG), id="70b-bf16-on-one-l4"),
    pytest.param({"pools.l4.gpu": "l40s", "pools.l4.model": "qwen3-32b"}, "pools.l4.model",
                 ("Qwen3-32B in bf16", "NVIDIA L40S", *TOO_BIG), id="qwen3-32b-bf16-on-one-l40s"),
    pytest.param({"pools.l4.engine": DELETE}, "pools.l4.engine.max_model_len",
                 ("Llama-3.1-8B", "NVIDIA L4", "fewer than max_model_len 131072", "set engine.max_model_len <= "),
                 id="kv-cache-below-default-max-model-len"),
    pytest.param({"pools.l4.gpu": "h100_sxm", "pools.l4.model": "llama-2-13b", "pools.l4.tensor_parallel": 3},
                 "pools.l4.tensor_parallel", ("3 does not divide the 40 attention heads of Llama-2-13B",),
                 id="tp3-llama-2-13b"),
    pytest.param({"pools.l4.gpu": "t4", "pools.l4.model": "llama-2-7b", "pools.l4.kv_cache_dtype": "fp8"},
                 "pools.l4.kv_cache_dtype", ("compute capability 8.0", "NVIDIA T4", "allowed here: auto, bf16, fp16"),
                 id="fp8-kv-cache-on-t4"),
    pytest.param({"pools.l4.engine.max_model_len": 1_000_000}, "pools.l4.engine.max_model_len",
                 ("exceeds Llama-3.1-8B's context length 131072",), id="max-model-len-above-context"),
    pytest.param({"pools.l4.engine.num_gpu_blocks_override": 10}, "pools.l4.engine.num_gpu_blocks_override",
                 ("holds 160 tokens", "fewer than max_model_len 4096"), id="kv-blocks-override-too-small"),
    pytest.param({"pools.l4.engine": {"max_model_len": 16384, "enable_chunked_prefill": False}},
                 "pools.l4.engine.max_num_batched_tokens", ("without chunked prefill",), id="no-chunked-prefill"),
    # references to catalog entries and files
    pytest.param({"pools.l4.price": {"provider": "oracle"}}, "pools.l4.price",
                 ("provider=oracle", "the catalog has: ", "aws/on_demand/g6.xlarge", "price.usd_per_gpu_hour"),
                 id="price-provider-not-in-catalog"),
    pytest.param({"workload": {"type": "trace", "path": "missing.csv"}}, "workload.path",
                 ("trace file not found", "missing.csv"), id="trace-file-missing"),
    pytest.param({"workload.prompt_tokens": {"dist": "empirical", "path": "lengths.csv", "column": "prompt"}},
                 "workload.prompt_tokens.path", ("length file not found", "lengths.csv"), id="length-file-missing"),
    pytest.param({"pools.l4.model": "nowhere/config.json"}, "pools.l4.model",
                 ("model config file not found", "config.json"), id="hf-config-missing"),
    pytest.param({"catalog_files": ["my_catalog.yaml"]}, "catalog_files", ("my_catalog.yaml",),
                 id="catalog-file-missing"),
    # MIG (reference section 4)
    pytest.param({"pools.l4.sharing": {"mode": "mig", "profile": "1g.10gb"}}, "pools.l4.sharing.profile",
                 ("does not support MIG", "MIG-1"), id="mig-on-l4"),
    pytest.param({"pools.l4.gpu": "h100_sxm", "pools.l4.sharing": {"mode": "mig", "profile": "5g.50gb"}},
                 "pools.l4.sharing.profile", ("unknown MIG profile '5g.50gb'", "3g.40gb"), id="mig-unknown-profile"),
    pytest.param({"pools.l4.gpu": "h100_sxm", "pools.l4.tensor_parallel": 2,
                  "pools.l4.sharing": {"mode": "mig", "profile": "3g.40gb"}}, "pools.l4.tensor_parallel",
                 ("tensor_parallel must be 1",), id="mig-with-tensor-parallelism"),
    pytest.param({"pools.l4.gpu": "h100_sxm", "pools.l4.precision": "bf16",
                  "pools.l4.sharing": {"mode": "mig", "profile": "1g.10gb"}}, "pools.l4",
                 ("GiB",), id="mig-instance-too-small"),
    # vGPU, Kubernetes time-slicing and MPS (reference sections 3 and 5)
    pytest.param({"pools.l4.sharing": {"mode": "vgpu", "profile": "L4-5C"}}, "pools.l4.sharing.profile",
                 ("unknown vGPU profile 'L4-5C'", "L4-6C", "Table 3.4"), id="vgpu-unknown-profile"),
    pytest.param({"pools.l4.gpu": "t4", "pools.l4.sharing": {"mode": "vgpu", "profile": "T4-4C"}},
                 "pools.l4.sharing.profile", ("NVIDIA T4 has no vGPU profiles",), id="vgpu-profiles-missing"),
    pytest.param({"pools.l4.sharing": {"mode": "vgpu", "profile": "L4-12C", "scheduler": "fixed_share",
                                       "mixed_sizes": True}}, "pools.l4.sharing.scheduler",
                 ("fixed share is not supported in mixed-size mode", "Table 3.1"), id="vgpu-fixed-share-mixed"),
    pytest.param({"pools.l4.sharing": {"mode": "vgpu", "profile": "L4-12C", "scheduler": "round_robin"}},
                 "pools.l4.sharing.scheduler", ("best_effort", "equal_share", "fixed_share"),
                 id="vgpu-unknown-scheduler"),
    pytest.param({"pools.l4.sharing": {"mode": "vgpu", "profile": "L4-12C", "time_slice_ms": 40}},
                 "pools.l4.sharing.time_slice_ms", ("less than or equal to 30",), id="vgpu-slice-too-long"),
    pytest.param({"pools.l4.tensor_parallel": 2, "pools.l4.sharing": {"mode": "vgpu", "profile": "L4-24C"}},
                 "pools.l4.tensor_parallel", ("tensor_parallel must be 1",), id="vgpu-with-tensor-parallelism"),
    pytest.param({"pools.l4.sharing": {"mode": "vgpu", "profile": "L4-4C"}}, "pools.l4",
                 ("GiB",), id="vgpu-profile-too-small-for-model"),
    pytest.param({"pools.l4.model": "llama-3.2-1b", "pools.l4.replicas": 2,
                  "pools.l4.sharing": {"mode": "timeslice", "replicas_per_gpu": 2, "memory_fraction": 0.6}},
                 "pools.l4.sharing.memory_fraction", ("add up to more than 1", "SH-1", "at most 0.5"),
                 id="timeslice-memory-oversubscribed"),
    pytest.param({"workload": {"type": "trace", "format": "csv", "path": "t.csv"}}, "workload",
                 ("format csv needs columns",), id="csv-trace-without-columns"),
    # autoscaling, lifecycle, nodes (reference sections 1 and 2)
    pytest.param({"pools.l4.autoscale": {"policy": "hpa", "max_replicas": 4, "metrics": [{"name": "qps",
                                                                                          "target": 1}]}},
                 "pools.l4.autoscale.metrics.0", ("unknown metric 'qps'", "queue_length", "ttft_p90_s"),
                 id="hpa-unknown-metric"),
    pytest.param({"pools.l4.autoscale": {"policy": "hpa", "min_replicas": 5, "max_replicas": 4,
                                         "metrics": [{"name": "queue_length", "target": 10}]}},
                 "pools.l4.autoscale", ("min_replicas (5) must not exceed max_replicas (4)",), id="hpa-bounds"),
    pytest.param({"pools.l4.autoscale": {"policy": "hpa", "metrics": [{"name": "queue_length", "target": 10}]}},
                 "pools.l4.autoscale.max_replicas", ("required",), id="hpa-max-replicas-missing"),
    pytest.param({"pools.l4.autoscale": {"policy": "magic"}}, "pools.l4.autoscale",
                 ("hpa", "keda", "kpa", "scheduled", "predictive"), id="autoscale-unknown-policy"),
    pytest.param({"pools.l4.lifecycle": {"warmup_s": {"dist": "uniform", "low_s": 60, "high_s": 30}}},
                 "pools.l4.lifecycle.warmup_s", ("high_s (30.0) must be at least low_s (60.0)",),
                 id="lifecycle-uniform-reversed"),
    pytest.param({"pools.l4.tensor_parallel": 2, "pools.l4.nodes": {"gpus_per_node": 1}}, "pools.l4",
                 ("gpus_per_node (1) is less than tensor_parallel (2)",), id="node-smaller-than-replica"),
    pytest.param({"pools.l4.model": "llama-3.2-1b", "pools.l4.sharing": {"mode": "vgpu", "profile": "L4-12C"},
                  "pools.l4.autoscale": {"policy": "kpa", "max_replicas": 2}}, "pools.l4",
                 ("sharing mode 'vgpu' are not supported",), id="autoscale-on-shared-gpu"),
    pytest.param({"fleet_autoscale": {"pools": ["l4", "h100"], "capacity_rps": {"l4": 1, "h100": 5}}},
                 "fleet_autoscale.pools.1", ("unknown pool 'h100'",), id="fleet-autoscale-unknown-pool"),
    pytest.param({"fleet_autoscale": {"pools": ["l4"], "capacity_rps": {}}}, "fleet_autoscale",
                 ("capacity_rps is missing for ['l4']",), id="fleet-autoscale-capacity-missing"),
    pytest.param({"fleet_autoscale": {"pools": ["l4"], "capacity_rps": {"l4": 1}},
                  "pools.l4.autoscale": {"policy": "kpa", "max_replicas": 2}}, "pools.l4.autoscale",
                 ("sized by fleet_autoscale",), id="fleet-autoscale-and-pool-autoscale"),
    pytest.param({"pools.l4.spot": {"reclaims_per_gpu_hour": 0}}, "pools.l4.spot.reclaims_per_gpu_hour",
                 ("greater than 0",), id="spot-rate-zero"),
    pytest.param({"pools.l4.model": "llama-3.2-1b", "pools.l4.sharing": {"mode": "mps", "replicas_per_gpu": 64}},
                 "pools.l4.sharing.replicas_per_gpu", ("less than or equal to 48",), id="mps-too-many-clients"),
]


@pytest.mark.parametrize(("edits", "field", "hints"), SCENARIO_CASES)
def test_bad_scenario_field(tmp_path, capsys, edits, field, hints):
    path = write_scenario(tmp_path, edited(edits))
    line = run_bad(capsys, path)
    assert_names(line, path, field, hints)


def test_validate_reports_the_same_error_as_run(tmp_path, capsys):
    path = write_scenario(tmp_path, edited({"pools.l4.gpu": "h100"}))
    rc, out, err = cli(capsys, "validate", path)
    line = error_line(rc, err)
    assert_names(line, path, "pools.l4.gpu", ("did you mean 'h100_sxm'?",))
    assert out == ""


# ---------------------------------------------------------------------------------- the scenario file

FILE_CASES = [
    pytest.param("name: x\nworkload:\n  type: open_loop\n   arrival: {process: poisson}\npools: {}\n",
                 ("not valid YAML", "line 4"), id="yaml-syntax-error"),
    pytest.param("name: x\npools:\n  l4: {gpu: l4\n", ("not valid YAML", "line 4"), id="yaml-unclosed-flow-mapping"),
    pytest.param("name: x\n\tpools: {}\n", ("not valid YAML", "line 2", "'\\t'"), id="yaml-tab"),
    pytest.param("", ("empty file", "workload and pools"), id="empty-file"),
    pytest.param("# only a comment\n", ("empty file",), id="only-comments"),
    pytest.param("- workload\n- pools\n", ("must be a mapping", "got list"), id="scenario-is-list"),
    pytest.param("just a string\n", ("must be a mapping", "got str"), id="scenario-is-scalar"),
    pytest.param(b"name: caf\xe9\n", ("not UTF-8",), id="scenario-not-utf8"),
]


@pytest.mark.parametrize(("content", "hints"), FILE_CASES)
def test_bad_scenario_file(tmp_path, capsys, content, hints):
    path = tmp_path / "scenario.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    assert_names(run_bad(capsys, path), path, "", hints)


def test_scenario_is_a_directory(tmp_path, capsys):
    assert_names(run_bad(capsys, tmp_path), tmp_path, "", ("is a directory",))


@pytest.mark.parametrize("command", ["run", "validate"])
def test_scenario_file_missing(tmp_path, capsys, command):
    path = tmp_path / "nope.yaml"
    rc, _, err = cli(capsys, command, path)
    assert_names(error_line(rc, err), path, "", ("file not found",))


# --------------------------------------------------------------------------------- fixture files

FIXTURE_CASES = [
    pytest.param("yaml_syntax.yaml", "yaml_syntax.yaml", ("not valid YAML: line 6",), id="yaml-syntax"),
    pytest.param("scenario_is_list.yaml", "scenario_is_list.yaml", ("must be a mapping",), id="list"),
    pytest.param("trace_unsorted.yaml", "trace_unsorted.csv:4", ("TIMESTAMP goes backwards", "sorted"),
                 id="trace-unsorted"),
    pytest.param("empirical_bad.yaml", "lengths_bad.csv:4", ("'output'", "positive integers", "'many'"),
                 id="empirical-length-bad-value"),
    pytest.param("hf_broken.yaml", "hf_broken/config.json:4", ("pools.small.model", "not valid JSON"),
                 id="hf-config-invalid-json"),
]


@pytest.mark.parametrize(("scenario", "where", "hints"), FIXTURE_CASES)
def test_bad_fixture_file(capsys, scenario, where, hints):
    """Files in tests/bad_inputs/; paths inside them are relative to the scenario's folder."""
    line = run_bad(capsys, BAD / scenario)
    assert str(BAD / where) in line, line
    for hint in hints:
        assert hint in line, (hint, line)


# --------------------------------------------------------------------------------------------- traces

TRACE_CASES = [
    pytest.param(TRACE_HEADER + ROW1 + "yesterday,396,109\n", 3, ("TIMESTAMP is not a date-time", "'yesterday'"),
                 id="bad-timestamp"),
    pytest.param(TRACE_HEADER + ROW1 + ROW2 + "2023-11-16 18:15:51.0,12.5,3\n", 4,
                 ("ContextTokens must be an integer", "'12.5'"), id="non-integer-prompt"),
    pytest.param(TRACE_HEADER + ROW1 + "2023-11-16 18:15:51.0,12,lots\n", 3, ("GeneratedTokens must be an integer",),
                 id="non-integer-output"),
    pytest.param(TRACE_HEADER + ROW1 + "2023-11-16 18:15:51.0,12,0\n", 3, ("GeneratedTokens must be >= 1", "got 0"),
                 id="zero-output-tokens"),
    pytest.param(TRACE_HEADER + ROW1 + "2023-11-16 18:15:51.0,-5,3\n", 3, ("ContextTokens must be >= 1",),
                 id="negative-prompt-tokens"),
    pytest.param(TRACE_HEADER + ROW1 + ROW2 + "2023-11-16 18:15:51.0,12\n", 4, ("expected 3 fields, got 2",),
                 id="too-few-columns"),
    pytest.param(TRACE_HEADER + ROW1 + "2023-11-16 18:15:51.0,12,3,9\n", 3, ("expected 3 fields, got 4",),
                 id="too-many-columns"),
    pytest.param(TRACE_HEADER + ROW2 + ROW1, 3, ("TIMESTAMP goes backwards",), id="unsorted"),
    pytest.param("time,prompt,output\n" + ROW1, 1, ("expected header TIMESTAMP,ContextTokens,GeneratedTokens",),
                 id="wrong-header"),
    pytest.param(TRACE_HEADER + ROW1 + "\n" + "bad,1,1\n", 4, ("not a date-time",), id="blank-line-counted"),
    pytest.param("", 0, ("empty file", "TIMESTAMP,ContextTokens,GeneratedTokens"), id="empty-file"),
    pytest.param(TRACE_HEADER, 0, ("no requests",), id="header-only"),
    pytest.param((TRACE_HEADER + ROW1 + ROW2).encode() + b"2023-11-16 18:15:51.0,1\xff2,3\n", 4, ("not UTF-8",),
                 id="non-utf8-bytes"),
]


def trace_scenario(tmp_path: Path, content: str | bytes, **workload) -> tuple[Path, Path]:
    trace = tmp_path / "trace.csv"
    if isinstance(content, bytes):
        trace.write_bytes(content)
    else:
        trace.write_text(content, encoding="utf-8")
    path = write_scenario(tmp_path, edited({"workload": {"type": "trace", "path": "trace.csv", **workload}}))
    return path, trace.resolve()


@pytest.mark.parametrize(("content", "line_no", "hints"), TRACE_CASES)
def test_bad_trace(tmp_path, capsys, content, line_no, hints):
    path, trace = trace_scenario(tmp_path, content)
    line = run_bad(capsys, path)
    where = f"{trace}:{line_no}: " if line_no else f"{trace}: "
    assert where in line, (where, line)
    for hint in hints:
        assert hint in line, (hint, line)


def test_bad_trace_non_utf8_names_the_line(tmp_path, capsys):
    content = (TRACE_HEADER + ROW1 + ROW2).encode() + b"2023-11-16 18:15:51.0,1\xff2,3\n"
    path, trace = trace_scenario(tmp_path, content)
    assert f"{trace}:4: " in run_bad(capsys, path)


def test_validate_checks_the_trace_rows(tmp_path, capsys):
    path, trace = trace_scenario(tmp_path, TRACE_HEADER + ROW1 + "yesterday,396,109\n")
    rc, _, err = cli(capsys, "validate", path)
    assert f"{trace}:3: " in error_line(rc, err)


def test_validate_checks_empirical_length_values(capsys):
    rc, _, err = cli(capsys, "validate", BAD / "empirical_bad.yaml")
    assert f"{BAD / 'lengths_bad.csv'}:4: " in error_line(rc, err)


def test_trace_window_past_the_end(tmp_path, capsys):
    path, _ = trace_scenario(tmp_path, TRACE_HEADER + ROW1 + ROW2 + ROW3, start_s=3600)
    assert_names(run_bad(capsys, path), path, "workload.start_s", ())


# ------------------------------------------------------------------------------ empirical length files


@pytest.mark.parametrize(("csv_text", "column", "line_no", "hints"), [
    pytest.param("prompt,output\n10,5\n20,abc\n", "output", 3, ("'output' must hold positive integers", "'abc'"),
                 id="non-integer"),
    pytest.param("prompt,output\n10,5\n20,0\n", "output", 3, ("positive integers", "'0'"), id="zero"),
    pytest.param("prompt,output\n10,5\n20.5,7\n", "prompt", 3, ("positive integers", "'20.5'"), id="fractional"),
    pytest.param("prompt,output\n10,5\n", "promt", 1, ("no column 'promt'", "'prompt'", "'output'"),
                 id="unknown-column"),
])
def test_bad_empirical_length_file(tmp_path, capsys, csv_text, column, line_no, hints):
    (tmp_path / "lengths.csv").write_text(csv_text, encoding="utf-8")
    path = write_scenario(tmp_path, edited(
        {"workload.output_tokens": {"dist": "empirical", "path": "lengths.csv", "column": column}}))
    line = run_bad(capsys, path)
    assert f"{(tmp_path / 'lengths.csv').resolve()}:{line_no}: " in line, line
    for hint in hints:
        assert hint in line, (hint, line)


# --------------------------------------------------------------------- Hugging Face config.json models


def hf_scenario(tmp_path: Path, config) -> Path:
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config), encoding="utf-8")
    return write_scenario(tmp_path, edited({"pools.l4.model": "my-llama/config.json"}))


def test_hf_config_json_model_is_accepted(tmp_path, capsys):
    path = hf_scenario(tmp_path, LLAMA_CONFIG)
    rc, out, err = cli(capsys, "validate", path)
    assert (rc, err) == (0, "")
    deployment = [line for line in out.splitlines() if line.startswith("#   l4: ")]
    assert len(deployment) == 1, out
    assert "1 x (1 x NVIDIA L4), my-llama bf16" in deployment[0]
    scenario = load_scenario(path)
    assert scenario.pools["l4"].model == str((tmp_path / "my-llama" / "config.json").resolve())


@pytest.mark.parametrize(("config", "hints"), [
    pytest.param('{"hidden_size": 2048,\n  "num_attention_heads": 32,,\n}', ("config.json:2: ", "not valid JSON"),
                 id="invalid-json"),
    pytest.param("", ("config.json:1: ", "not valid JSON"), id="empty"),
    pytest.param("[1, 2]", ("must be a JSON object",), id="json-list"),
    pytest.param({k: v for k, v in LLAMA_CONFIG.items() if k not in ("num_hidden_layers", "vocab_size")},
                 ("missing field(s)", "num_hidden_layers", "vocab_size"), id="missing-fields"),
    pytest.param({**LLAMA_CONFIG, "max_position_embeddings": 8192.5}, ("valid integer",), id="fractional-context"),
])
def test_hf_config_json_broken(tmp_path, capsys, config, hints):
    path = hf_scenario(tmp_path, config)
    line = run_bad(capsys, path)
    assert_names(line, path, "pools.l4.model", (str((tmp_path / "my-llama" / "config.json").resolve()), *hints))


@pytest.mark.parametrize("heads", [0, "32"], ids=["zero", "string"])
def test_hf_config_json_bad_head_count(tmp_path, capsys, heads):
    config = {k: v for k, v in LLAMA_CONFIG.items() if k != "head_dim"}
    path = hf_scenario(tmp_path, {**config, "num_attention_heads": heads})
    assert_names(run_bad(capsys, path), path, "pools.l4.model", ("num_attention_heads",))


def test_hf_config_json_kv_heads_not_dividing(tmp_path, capsys):
    line = run_bad(capsys, hf_scenario(tmp_path, {**LLAMA_CONFIG, "num_key_value_heads": 5}))
    assert ": : " not in line and "Value error" not in line, line
    assert "num_key_value_heads" in line, line


# ---------------------------------------------------------------------------------- --set overrides


@pytest.mark.parametrize(("assignment", "hints"), [
    pytest.param("pools.l4.replicas", ("expected dotted.key=value",), id="no-equals"),
    pytest.param("pools.l4.replicas.count=3", ("pools.l4.replicas: is a value, not a mapping",),
                 id="index-into-scalar"),
    pytest.param("name.first=x", ("name: is a value, not a mapping",), id="index-into-string"),
    pytest.param("pools..gpu=l4", ("empty segment",), id="empty-segment"),
    pytest.param("=3", ("empty segment",), id="empty-key"),
    pytest.param("workload.arrival.rate_per_s=[1", ("cannot parse value '[1'",), id="unparsable-value"),
])
def test_bad_set_override(capsys, assignment, hints):
    rc, _, err = cli(capsys, "validate", QUICKSTART, "--set", assignment)
    line = error_line(rc, err)
    assert f"--set {assignment}: " in line, line
    for hint in hints:
        assert hint in line, (hint, line)


@pytest.mark.parametrize(("assignment", "field", "hint"), [
    ("pools.l4.gpu=h100", "pools.l4.gpu", "did you mean 'h100_sxm'?"),
    ("workload.num_requests=0", "workload.num_requests", "greater than 0"),
    ("pools.l4.colour=red", "pools.l4.colour", "unknown field; allowed: "),
])
def test_set_override_with_bad_value_names_the_field(capsys, assignment, field, hint):
    rc, _, err = cli(capsys, "run", QUICKSTART, "--quiet", "--set", assignment)
    line = error_line(rc, err)
    assert field in line and hint in line, line


def test_set_override_with_bad_value_names_the_override(capsys):
    rc, _, err = cli(capsys, "validate", QUICKSTART, "--set", "pools.l4.replicas=two")
    line = error_line(rc, err)
    assert "--set pools.l4.replicas=two" in line, line


# ------------------------------------------------------------------------------ command-line arguments


@pytest.mark.parametrize("argv", [
    pytest.param(["frobnicate"], id="unknown-subcommand"),
    pytest.param([], id="no-subcommand"),
    pytest.param(["run"], id="run-without-scenario"),
    pytest.param(["run", str(QUICKSTART), "--seed", "-1"], id="seed-negative"),
    pytest.param(["run", str(QUICKSTART), "--seed", "abc"], id="seed-abc"),
    pytest.param(["run", str(QUICKSTART), "--seed", "1.5"], id="seed-fractional"),
    pytest.param(["run", str(QUICKSTART), "--bogus"], id="unknown-option"),
    pytest.param(["catalog", "tpus"], id="catalog-unknown-table"),
])
def test_bad_cli_arguments(capsys, argv):
    """argparse's own errors: exit status 2, usage and one error line, no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert err.startswith("usage: fleetsim")
    assert re.search(r"^fleetsim( \w+)?: error: ", err, re.MULTILINE), err


def test_catalog_extra_file_missing(tmp_path, capsys):
    rc, _, err = cli(capsys, "catalog", "gpus", "--file", tmp_path / "extra.yaml")
    assert str(tmp_path / "extra.yaml") in error_line(rc, err)


def test_catalog_extra_file_invalid(tmp_path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("models:\n  tiny:\n    name: Tiny\n    n_layers: 0\n", encoding="utf-8")
    rc, _, err = cli(capsys, "catalog", "models", "--file", extra)
    line = error_line(rc, err)
    assert f"{extra}: models.tiny.n_layers: " in line and "greater than 0" in line, line


def test_out_is_an_existing_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x", encoding="utf-8")
    rc, _, err = cli(capsys, "run", QUICKSTART, "--quiet", "--set", "workload.num_requests=10", "--out", target)
    line = error_line(rc, err)
    assert "--out" in line and str(target) in line, line


# ------------------------------------------------------------------------ known gaps in the messages


def test_unknown_name_without_close_match_reads_well(tmp_path, capsys):
    path = write_scenario(tmp_path, edited({"pools.l4.gpu": "tpu_v5"}))
    assert "unknown GPU 'tpu_v5'; allowed: " in run_bad(capsys, path)


def test_unknown_tag_names_the_tag_field_and_suggests(tmp_path, capsys):
    path = write_scenario(tmp_path, edited({"workload.arrival": {"process": "poison", "rate_per_s": 2}}))
    line = run_bad(capsys, path)
    assert f"{path}: workload.arrival.process: " in line, line
    assert "did you mean 'poisson'" in line, line


def test_duplicate_key_is_an_error(tmp_path, capsys):
    text = yaml.safe_dump(edited({}), sort_keys=False)
    pool = "  l4:\n    gpu: l4\n    model: llama-3.1-8b\n    replicas: 3\n    engine: {max_model_len: 4096}\n"
    path = write_scenario(tmp_path, text.replace("pools:\n", "pools:\n" + pool))
    line = run_bad(capsys, path)
    assert "duplicate" in line and "l4" in line, line


def test_boolean_is_not_an_integer(tmp_path, capsys):
    path = write_scenario(tmp_path, yaml.safe_dump(edited({}), sort_keys=False).replace("replicas: 1", "replicas: yes"))
    assert_names(run_bad(capsys, path), path, "pools.l4.replicas", ("integer",))
