"""MIG placement rules and instance specs (sim/sharing/mig.py; reference section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.catalog import load_catalog
from sim.sharing.mig import PlacementError, check_placement, instance_spec, layout
from tests.conftest import scenario

GPUS = load_catalog().gpus
H100 = GPUS["h100_sxm"]

VALID = [  # the reference's examples of valid combinations (memory-slot starts)
    [("7g.80gb", 0)],
    [("4g.40gb", 0), ("3g.40gb", 4)],
    [("3g.40gb", 0), ("3g.40gb", 4)],
    [("4g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)],
    [("2g.20gb", 0), ("2g.20gb", 2), ("3g.40gb", 4)],
    [("2g.20gb", 0), ("2g.20gb", 2), ("2g.20gb", 4), ("1g.10gb", 6)],
    [("1g.10gb", i) for i in range(7)],
    [("1g.20gb", i) for i in (0, 2, 4, 6)],
    [("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)],
]


@pytest.mark.parametrize("placement", VALID)
def test_reference_combinations_are_valid(placement):
    check_placement(H100, placement)


@pytest.mark.parametrize(("placement", "rule"), [
    ([("4g.40gb", 4)], "cannot start at memory slot 4 (MIG-3: allowed starts [0])"),
    ([("4g.40gb", 0), ("4g.40gb", 0)], "overlaps"),
    ([("3g.40gb", 0), ("2g.20gb", 2)], "overlaps 3g.40gb@0"),
    ([("1g.10gb", 7)], "cannot start at memory slot 7"),
    ([("5g.50gb", 0)], "unknown MIG profile '5g.50gb'"),
])
def test_invalid_combinations_name_the_rule(placement, rule):
    with pytest.raises(PlacementError) as err:
        check_placement(H100, placement)
    assert rule in str(err.value)


@pytest.mark.parametrize("gpu", ["l4", "l40s", "t4"])
def test_mig_on_gpus_without_it_is_an_error(gpu):
    with pytest.raises(PlacementError, match="does not support MIG"):
        layout(GPUS[gpu], ["1g.10gb"])


def test_layout_packs_and_refuses_what_does_not_fit():
    assert layout(H100, ["3g.40gb", "3g.40gb"]) == [("3g.40gb", 0), ("3g.40gb", 4)]
    assert layout(H100, ["1g.10gb"] * 7) == [("1g.10gb", i) for i in range(7)]
    with pytest.raises(PlacementError, match=r"4g\.40gb, 3g\.40gb, 1g\.10gb need 9 memory slots of 8"):
        layout(H100, ["4g.40gb", "3g.40gb", "1g.10gb"])
    with pytest.raises(PlacementError, match=r"no valid layout holds 4g\.40gb, 2g\.20gb, 2g\.20gb"):
        layout(H100, ["4g.40gb", "2g.20gb", "2g.20gb"])  # 8 slots, but no 2g may start at 6
    with pytest.raises(PlacementError, match=r"8 x 1g\.10gb \(MIG-3: at most 7 per GPU\)"):
        layout(H100, ["1g.10gb"] * 8)


@pytest.mark.parametrize(("names", "expected"), [
    # The lowest free start for each in turn would put 3g at 0 and leave no start for the second 2g.
    (["3g.40gb", "2g.20gb", "2g.20gb"], [("3g.40gb", 4), ("2g.20gb", 0), ("2g.20gb", 2)]),
    (["3g.40gb", "4g.40gb"], [("3g.40gb", 4), ("4g.40gb", 0)]),
    (["1g.20gb", *["1g.10gb"] * 5], [("1g.20gb", 0), *[("1g.10gb", i) for i in range(2, 7)]]),
])
def test_layout_finds_the_valid_layouts_of_mixed_profiles(names, expected):
    """MIG-3's own examples of valid mixed layouts are found whatever the order the instances come in."""
    assert layout(H100, names) == expected
    assert sorted(layout(H100, names[::-1])) == sorted(expected)


def test_a_sharing_group_of_mixed_mig_profiles_fits_one_gpu():
    """Two pools in one MIG group, 3g.40gb and 2 x 2g.20gb: one H100, in either order of the pools."""
    from sim import simulate

    def fleet(first, second):
        pools = {name: {"gpu": "h100_sxm", "model": "llama-3.2-1b", "replicas": n, "engine": {"max_model_len": 4096},
                        "sharing": {"mode": "mig", "profile": prof, "group": "box"}}
                 for name, prof, n in (first, second)}
        return simulate(scenario({"workload": {"num_requests": 20}, "pools": pools}))

    for order in ((("p", "3g.40gb", 1), ("q", "2g.20gb", 2)), (("q", "2g.20gb", 2), ("p", "3g.40gb", 1))):
        res = fleet(*order)
        assert len(res.gpus) == 1 and res.summary["shared_gpus"]["physical_gpus"] == 1


def test_instance_is_a_smaller_gpu():
    spec = instance_spec(H100, "3g.40gb")
    assert spec.sm_count == 60 and spec.memory_gib == 39.5
    assert spec.bf16_tflops == pytest.approx(H100.bf16_tflops * 60 / 132)
    assert spec.memory_bandwidth_gb_s == pytest.approx(H100.memory_bandwidth_gb_s / 2)
    assert spec.tdp_w == H100.tdp_w and not spec.mig_profiles
    whole = instance_spec(H100, "7g.80gb")
    assert whole.bf16_tflops == pytest.approx(H100.bf16_tflops)
    assert whole.memory_bandwidth_gb_s == pytest.approx(H100.memory_bandwidth_gb_s)


def test_mig_pool_pays_whole_gpus_and_runs_on_smaller_instances():
    from sim import simulate
    from tests.conftest import scenario

    base = {"workload": {"num_requests": 60, "arrival": {"rate_per_s": 2.0},
                         "prompt_tokens": {"dist": "fixed", "tokens": 512},
                         "output_tokens": {"dist": "fixed", "tokens": 64}},
            "pools": {"p": {"perf": {"model": "kernel"}, "replicas": 3, "price": {"usd_per_gpu_hour": 10.0}}},
            "router": {"policy": "round_robin"}}
    whole = simulate(scenario(base))
    mig = simulate(scenario({**base, "pools": {"p": {"perf": {"model": "kernel"}, "replicas": 3,
                                                     "price": {"usd_per_gpu_hour": 10.0},
                                                     "sharing": {"mode": "mig", "profile": "3g.40gb"}}}}))
    # Three 3g.40gb instances need two H100s (two per GPU): two GPUs paid, not three.
    assert mig.summary["cost"]["usd_per_hour"] == pytest.approx(20.0)
    assert whole.summary["cost"]["usd_per_hour"] == pytest.approx(30.0)
    assert set(mig.requests["gpu_type"]) == {"h100_sxm:3g.40gb"}
    # An instance has 60 of 132 SMs and half the bandwidth: every token is slower than on a whole GPU.
    assert mig.summary["tpot_s"]["p50"] > 1.5 * whole.summary["tpot_s"]["p50"]
    assert mig.summary["ttft_s"]["p50"] > 1.5 * whole.summary["ttft_s"]["p50"]


def test_passthrough_overhead_slows_every_step_by_its_factor():
    from sim import simulate
    from tests.conftest import scenario

    base = {"workload": {"num_requests": 20, "arrival": {"process": "constant", "rate_per_s": 0.5},
                         "prompt_tokens": {"dist": "fixed", "tokens": 256},
                         "output_tokens": {"dist": "fixed", "tokens": 32}},
            "pools": {"p": {"perf": {"model": "kernel"}}}}
    bare = simulate(scenario(base))
    vm = simulate(scenario({**base, "pools": {"p": {"perf": {"model": "kernel"}, "sharing": {
        "mode": "passthrough", "hypervisor_overhead": 0.05}}}}))
    # One request at a time (arrivals 2 s apart): every latency scales by exactly 1.05.
    np.testing.assert_allclose(vm.requests["e2e_s"], 1.05 * bare.requests["e2e_s"], rtol=1e-9)
    none = simulate(scenario({**base, "pools": {"p": {"perf": {"model": "kernel"}, "sharing": {
        "mode": "passthrough"}}}}))
    np.testing.assert_allclose(none.requests["e2e_s"], bare.requests["e2e_s"], rtol=0, atol=0)
