"""Knative KPA, KEDA, scheduled and predictive autoscaling: the pure deciders exactly, and each policy in a run."""

from __future__ import annotations

import pytest

from sim import simulate
from sim.autoscale.kpa import Kpa
from sim.autoscale.predictive import bucket_rates, holt_forecast, replicas_for
from tests.conftest import scenario
from tests.test_lifecycle import FIXED, step_workload


def feed(kpa: Kpa, start: int, end: int, value: float) -> None:
    for t in range(start, end):
        kpa.observe(float(t), value)


def test_kpa_stable_mode_sizes_by_the_stable_average():
    kpa = Kpa(target=10.0)
    feed(kpa, 1, 61, 35.0)
    assert kpa.decide(60.0, ready=4, current=4) == 4  # ceil(35 / 10)
    assert not kpa.in_panic


def test_kpa_panics_on_a_burst_never_scales_down_in_panic_and_leaves_after_a_stable_window():
    kpa = Kpa(target=10.0)
    feed(kpa, 1, 61, 20.0)  # 2 pods' worth for a minute
    assert kpa.decide(60.0, ready=2, current=2) == 2
    feed(kpa, 61, 67, 60.0)  # a 6 s burst to 60: the panic window asks for 6 pods = 3 x ready >= 2
    assert kpa.decide(66.0, ready=2, current=2) == 6 and kpa.in_panic
    # Burst over: the panic window falls back to 2 pods, but panic never scales down.
    feed(kpa, 67, 80, 20.0)
    assert kpa.decide(79.0, ready=6, current=6) == 6 and kpa.in_panic
    # The last tick over the threshold was at 66 s; panic ends once a whole stable window (60 s) has passed.
    feed(kpa, 80, 127, 20.0)
    assert kpa.decide(126.0, ready=6, current=6) == 6 and kpa.in_panic
    feed(kpa, 127, 128, 20.0)
    assert kpa.decide(127.0, ready=6, current=6) == 3 and not kpa.in_panic  # floor(6 / max_scale_down_rate 2)


def test_kpa_rate_limits_and_scale_to_zero_after_the_grace_period():
    kpa = Kpa(target=10.0, max_scale_up_rate=2.0, panic_threshold=100.0)
    feed(kpa, 1, 61, 500.0)
    assert kpa.decide(60.0, ready=3, current=3) == 6  # ceil(2 x 3 ready)
    kpa = Kpa(target=10.0, scale_to_zero_grace_s=30.0)
    feed(kpa, 1, 61, 0.0)
    assert kpa.decide(60.0, ready=1, current=1) == 1  # desired 0, the grace period starts
    feed(kpa, 61, 90, 0.0)
    assert kpa.decide(89.0, ready=1, current=1) == 1
    feed(kpa, 90, 91, 0.0)
    assert kpa.decide(90.0, ready=1, current=1) == 0
    assert Kpa(target=10.0, activation_scale=2).decide(0.0, 0, 0) == 0  # no data: hold


def test_holt_forecast_follows_a_linear_trend_exactly():
    rates = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert holt_forecast(rates, alpha=0.5, beta=0.3, buckets_ahead=2.0) == pytest.approx(7.0)
    assert holt_forecast([3.0] * 5, 0.5, 0.3, 10.0) == pytest.approx(3.0)
    assert holt_forecast([5.0, 1.0], 1.0, 1.0, 10.0) == 0.0  # never negative
    assert bucket_rates([0.5, 30.0, 61.0, 119.0, 120.0], now_s=120.0, bucket_s=60.0, history_s=600.0) == [
        2 / 60, 2 / 60]
    assert replicas_for(9.0, capacity_rps=2.0, headroom=0.0) == 5 and replicas_for(8.0, 2.0, 0.0) == 4


def pool(autoscale, **over):
    return {"gpu": "l4", "model": "llama-3.2-1b", "perf": {"model": "kernel"}, "engine": {"max_model_len": 2048},
            "price": {"usd_per_gpu_hour": 1.0}, "lifecycle": FIXED, "autoscale": autoscale, **over}


def lifecycle_of(res, state):
    life = res.lifecycle
    return life[life["state"] == state]


def test_scheduled_policy_follows_its_table():
    res = simulate(scenario({"workload": step_workload(100, 1.0, 1.0, 600), "pools": {"p": pool({
        "policy": "scheduled", "schedule": [{"at_s": 0, "replicas": 1}, {"at_s": 120, "replicas": 3},
                                             {"at_s": 450, "replicas": 2}]})}}))
    starts = lifecycle_of(res, "load")  # the image is on no new node: node, pull, then load
    assert list(lifecycle_of(res, "node")["time_s"]) == [120.0, 120.0]
    assert len(starts) == 2
    assert list(lifecycle_of(res, "draining")["time_s"]) == [450.0]


def test_keda_activates_from_zero_on_its_poll_and_returns_to_zero_after_the_cooldown():
    keda = {"policy": "keda", "max_replicas": 3, "polling_interval_s": 30, "cooldown_s": 120,
            "triggers": [{"name": "request_rate", "target": 5.0, "window_s": 30}]}
    # Traffic between 100 s and 200 s, quiet until 700 s, then a trickle.
    wl = {"type": "open_loop", "duration_s": 800, "num_requests": None,
          "arrival": {"process": "piecewise", "times_s": [0, 100, 200, 700], "rates_per_s": [0.0, 1.0, 0.0, 0.2]},
          "prompt_tokens": {"dist": "fixed", "tokens": 100}, "output_tokens": {"dist": "fixed", "tokens": 20}}
    # Empty nodes go at once (release_after_idle_s 0): each activation provisions a node, which the test reads.
    now = {"release_after_idle_s": 0}
    res = simulate(scenario({"workload": wl, "pools": {"p": pool(keda, replicas=0, nodes=now)}}))
    arrivals = res.requests["arrival_s"]
    first, last = arrivals.min(), arrivals[arrivals < 700].max()
    node = lifecycle_of(res, "node")["time_s"]
    # Activation happens on the first poll (every 30 s) after the first arrival.
    assert node.min() == 30 * (first // 30 + 1)
    # The trigger is active at the first poll after the last burst arrival (its 30 s window holds it); scale to 0
    # comes on the poll 120 s (the cooldown) after that.
    gone = lifecycle_of(res, "draining")["time_s"]
    assert gone.iloc[0] == 30 * (last // 30 + 1) + 120
    # The trickle from 700 s activates the pool again.
    assert (node > 700).any()
    assert (res.requests["status"] == "finished").all()


def test_kpa_policy_scales_a_pool_up_and_back_down():
    res = simulate(scenario({"workload": step_workload(100, 8.0, 0.2, 700), "pools": {"p": pool(
        {"policy": "kpa", "target": 4, "target_utilization": 1.0, "max_replicas": 4})}}))
    assert len(lifecycle_of(res, "ready")) > 1
    assert len(lifecycle_of(res, "draining")) >= 1
    assert set(res.scaling["policy"]) == {"kpa"}
    assert (res.requests["status"] == "finished").all()


def test_predictive_policy_provisions_ahead_of_a_ramp():
    wl = {"type": "open_loop", "duration_s": 1500, "num_requests": None,
          "arrival": {"process": "piecewise", "times_s": [0, 300, 600, 900, 1200],
                      "rates_per_s": [1.0, 2.0, 3.0, 4.0, 5.0]},
          "prompt_tokens": {"dist": "fixed", "tokens": 100}, "output_tokens": {"dist": "fixed", "tokens": 20}}
    res = simulate(scenario({"workload": wl, "pools": {"p": pool(
        {"policy": "predictive", "capacity_rps": 1.0, "headroom": 0.0, "max_replicas": 10})}}))
    rows = res.scaling
    assert set(rows["metric"]) == {"forecast_rps"}
    # By the last step (5 req/s from 1,200 s) the pool has been provisioned for it.
    late = rows[rows["time_s"] >= 1200]
    assert late["desired"].max() >= 5


def test_fleet_allocation_by_strategy():
    from sim.autoscale.fleet import PoolOffer, allocate

    l4 = PoolOffer("l4", capacity_rps=2.0, min_replicas=1, max_replicas=4, usd_per_hour=0.8)
    h100 = PoolOffer("h100", capacity_rps=20.0, min_replicas=0, max_replicas=4, usd_per_hour=6.88)
    # Priority: the L4 baseline grows first (to 4 x 2 = 8 req/s), then H100 bursts.
    assert allocate(5.0, [l4, h100], "priority") == {"l4": 3, "h100": 0}
    assert allocate(30.0, [l4, h100], "priority") == {"l4": 4, "h100": 2}
    # Cheapest per request: $0.40 per (req/s) on L4, $0.344 on H100: H100 first, beyond the L4 minimum.
    assert allocate(30.0, [l4, h100], "cheapest") == {"l4": 1, "h100": 2}
    # Spot first; a spot pool with stuck replicas keeps them but does not grow: on-demand covers the rest.
    spot = PoolOffer("spot", 8.0, 1, 8, 0.79, spot=True)
    od = PoolOffer("od", 8.0, 0, 8, 1.86)
    assert allocate(30.0, [od, spot], "spot_first") == {"od": 0, "spot": 4}
    stuck = PoolOffer("spot", 8.0, 1, 8, 0.79, spot=True, stuck=1, current=3)
    assert allocate(30.0, [od, stuck], "spot_first") == {"od": 2, "spot": 3}  # 2 serving spot + 2 od cover 30


def test_fleet_autoscaler_bursts_to_the_second_pool_only_when_the_first_is_full():
    from tests.conftest import scenario as make

    base = pool(None)
    del base["autoscale"]
    wl = {"type": "open_loop", "duration_s": 1200, "num_requests": None,
          "arrival": {"process": "piecewise", "times_s": [0, 300], "rates_per_s": [1.0, 12.0]},
          "prompt_tokens": {"dist": "fixed", "tokens": 200}, "output_tokens": {"dist": "fixed", "tokens": 50}}
    res = simulate(make({"workload": wl, "pools": {"p": base, "h100": {**base, "gpu": "h100_sxm", "replicas": 0}},
                         "fleet_autoscale": {"pools": ["p", "h100"], "capacity_rps": {"p": 2.0, "h100": 20.0},
                                             "max_replicas": {"p": 3, "h100": 2}, "period_s": 15}}))
    life = res.lifecycle
    starts = life[life["state"] == "node"].merge(life[["replica_id", "pool"]].drop_duplicates(), on=["replica_id",
                                                                                                       "pool"])
    first = starts.groupby("pool")["time_s"].min()
    assert first["p"] <= first["h100"]  # the L4 pool grows first
    peak = res.scaling.groupby("pool", observed=True)["desired"].max()
    assert peak["p"] == 3 and 1 <= peak["h100"] <= 2  # 12 req/s x 1.2 needs all three L4s (6) and the H100
    assert (res.requests["status"] == "finished").all()


@pytest.mark.parametrize("config", ["azure_code_hpa_l4.yaml", "diurnal_burst_to_h100.yaml", "spot_first_l40s.yaml"])
def test_autoscaling_configs_run_short(config):
    import sim
    from tests.conftest import ROOT

    overrides = {"azure_code_hpa_l4.yaml": ["workload.duration_s=900"],
                 "diurnal_burst_to_h100.yaml": ["workload.duration_s=1800", "workload.arrival.peak_s=900",
                                                "workload.arrival.period_s=1800"],
                 "spot_first_l40s.yaml": ["workload.duration_s=1800", "workload.arrival.peak_s=900",
                                          "workload.arrival.period_s=1800"]}[config]
    res = sim.simulate(sim.load_scenario(ROOT / "configs" / config, overrides))
    s = res.summary["requests"]
    assert s["arrived"] == s["finished"] + s["rejected"] + s["in_flight"] and s["arrived"] > 100
    assert len(res.scaling) > 0 and res.summary["gpu_hours"]["billed"] > 0


def test_keda_activates_from_zero_on_the_queue_waiting_at_the_gateway():
    keda = {"policy": "keda", "max_replicas": 2, "polling_interval_s": 30, "cooldown_s": 60,
            "triggers": [{"name": "queue_length", "target": 5.0}]}
    wl = {"type": "open_loop", "num_requests": 40, "arrival": {"process": "constant", "rate_per_s": 0.5},
          "prompt_tokens": {"dist": "fixed", "tokens": 100}, "output_tokens": {"dist": "fixed", "tokens": 20}}
    res = simulate(scenario({"workload": wl, "pools": {"p": pool(keda, replicas=0)}}))
    assert (res.requests["status"] == "finished").all()
    assert lifecycle_of(res, "node")["time_s"].min() == 30.0  # the first poll sees the queued request


def test_a_class_whose_model_no_pool_can_ever_serve_is_rejected_with_a_reason():
    from tests.test_classes import CHAT, SMALL

    pools = {"p": {"gpu": "h100_sxm", "model": "llama-3.1-8b", "perf": {"model": "kernel"}, "replicas": 1,
                   "autoscale": {"policy": "kpa", "max_replicas": 2, "min_replicas": 1}},
             "small": {"gpu": "l4", "model": "llama-3.2-1b", "replicas": 0, "engine": {"max_model_len": 4096}}}
    res = simulate(scenario({"workload": CHAT, "pools": pools, "classes": [{"name": "small", "workload": SMALL}]}))
    req = res.requests
    small = req[req["class"] == "small"]
    assert (small["status"] == "rejected").all() and set(small["reject_reason"]) == {"no_replicas"}
    assert (req.loc[req["class"] == "default", "status"] == "finished").all()
    assert "stalled" not in res.summary


@pytest.mark.parametrize(("autoscale", "replicas", "message"), [
    ({"policy": "hpa", "min_replicas": 0, "max_replicas": 2, "metrics": [{"name": "queue_length", "target": 5}]},
     1, "needs an external metric"),
    ({"policy": "hpa", "min_replicas": 1, "max_replicas": 2, "metrics": [{"name": "queue_length", "target": 5}]},
     0, "stands aside"),
])
def test_hpa_configurations_that_could_never_scale_are_errors(autoscale, replicas, message):
    from sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match=message):
        scenario({"pools": {"p": pool(autoscale, replicas=replicas)}})


def test_kpa_activation_scale_holds_after_the_first_tick():
    """KPA-5 as Knative does it: every non-zero count is at least activation-scale, so the pods started from zero
    are not cancelled at the next tick while they start."""
    kpa = Kpa(target=70.0, activation_scale=3)
    for t in range(1, 5):
        kpa.observe(float(t), 10.0)
    assert kpa.decide(2.0, 0, 0) == 3
    assert kpa.decide(4.0, 0, 3) == 3


def test_kpa_rps_target_defaults_to_200():
    """Table 1.3: requests-per-second-target-default is 200 with metric rps, concurrency's is 100."""
    from sim.scaling_config import KpaConfig

    assert KpaConfig(metric="rps", max_replicas=4).target == 200.0
    assert KpaConfig(max_replicas=4).target == 100.0
    assert KpaConfig(metric="rps", target=50, max_replicas=4).target == 50.0


def test_keda_takes_a_pool_that_was_never_active_to_zero_at_its_first_poll():
    """KEDA with initialCooldownPeriod 0 (Table 1.2): a pool with replicas but no traffic yet goes to zero at the first
    poll, not a cooldown after start; traffic later brings it back."""
    keda = {"policy": "keda", "max_replicas": 3, "polling_interval_s": 30, "cooldown_s": 300,
            "triggers": [{"name": "request_rate", "target": 5.0, "window_s": 30}]}
    wl = {"type": "open_loop", "duration_s": 600, "num_requests": None,
          "arrival": {"process": "piecewise", "times_s": [0, 400], "rates_per_s": [0.0, 1.0]},
          "prompt_tokens": {"dist": "fixed", "tokens": 100}, "output_tokens": {"dist": "fixed", "tokens": 20}}
    now = {"release_after_idle_s": 0}
    res = simulate(scenario({"workload": wl, "pools": {"p": pool(keda, replicas=2, nodes=now)}}))
    # Its HPA (minimum 1) takes 2 to 1 at its first sync, 15 s; KEDA's poll takes the last one away at 30 s.
    assert list(lifecycle_of(res, "draining")["time_s"][:2]) == [15.0, 30.0]
    assert (lifecycle_of(res, "node")["time_s"] > 400).any()
    assert (res.requests["status"] == "finished").all()
