"""Golden summary figures of three reference scenarios, compared exactly: the same config and seed give the same
figures in any process and on any machine (issue #10). Regenerate only deliberately, after a change that is meant to
move them, and say why in the commit:

    python -m tests.test_golden --regenerate
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sim import load_scenario, simulate

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "summaries.json"
#: name -> (scenario file, overrides): the quick start (kernel model, mixed fleet), an autoscaled bursty trace with
#: cold starts, and a disaggregated fleet.
REFERENCES = {
    "quickstart": ("configs/quickstart.yaml", ["workload.num_requests=600"]),
    "azure_code_hpa": ("configs/azure_code_hpa_l4.yaml", ["workload.duration_s=900"]),
    "disaggregated": ("configs/disaggregated_h100.yaml", ["workload.num_requests=400"]),
}
#: The figures kept (dotted paths into the summary).
FIGURES = ("requests.arrived", "requests.finished", "requests.rejected", "requests.preemptions", "ttft_s.p50",
           "ttft_s.p99", "tpot_s.p50", "tpot_s.p99", "e2e_s.mean", "throughput.output_tokens_per_s",
           "slo.attainment", "cost.usd_total", "energy_kwh", "gpu_hours.billed", "utilisation.busy_gpu_hours",
           "duration_s", "engine.steps")


def figures(name: str) -> dict:
    path, overrides = REFERENCES[name]
    summary = simulate(load_scenario(ROOT / path, overrides)).summary
    out = {}
    for key in FIGURES:
        node = summary
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_golden_figures(name):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))[name]
    got = figures(name)
    assert got == golden, {k: (got[k], golden[k]) for k in golden if got[k] != golden[k]}


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m tests.test_golden --regenerate")
    GOLDEN.write_text(json.dumps({name: figures(name) for name in sorted(REFERENCES)}, indent=1) + "\n",
                      encoding="utf-8")
    sys.stdout.write(f"wrote {GOLDEN}\n")
