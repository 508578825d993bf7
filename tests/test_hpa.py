"""The HPA replica calculator and behavior (sim/autoscale/hpa.py) against the Kubernetes documentation's worked
examples and the rules HPA-1 to HPA-13 of the reference, as exact unit tests."""

from __future__ import annotations

from sim.autoscale.hpa import (
    Direction,
    Hpa,
    PodSample,
    RatePolicy,
    external_proposal,
    pods_proposal,
    scale_up_limit,
)

TOL = 0.1


def ready(*values):
    return [PodSample("ready", v) for v in values]


def test_ratio_doubles_or_halves_the_replicas():
    # "if the current metric value is 200m, and the desired value is 100m, the number of replicas will be doubled
    # ... if the current value is instead 50m, you'll halve the number of replicas".
    assert pods_proposal(ready(200, 200, 200), 3, 100, TOL) == 6
    assert pods_proposal(ready(50, 50, 50, 50), 4, 100, TOL) == 2


def test_within_tolerance_nothing_changes():
    assert pods_proposal(ready(105, 110, 100), 3, 100, TOL) == 3
    assert pods_proposal(ready(91, 91), 2, 100, TOL) == 2
    assert pods_proposal(ready(120, 120), 2, 100, TOL) == 3


def test_pending_pods_count_as_zero_only_when_scaling_up():
    # HPA-6: three ready pods at 150% of target and one pending: 450 / 4 = 112.5% -> ceil(1.125 x 4) = 5.
    pods = [*ready(150, 150, 150), PodSample("pending", None)]
    assert pods_proposal(pods, 4, 100, TOL) == 5
    # Two at 120% and two pending: filled in at 0 the ratio is 60%, the other way: no change.
    assert pods_proposal([*ready(120, 120), PodSample("pending", None), PodSample("pending", None)], 4, 100,
                         TOL) == 4
    # Scaling down, pending pods are left out: two ready pods at 30% of target -> ceil(0.3 x 2) = 1.
    assert pods_proposal([*ready(30, 30), PodSample("pending", None)], 3, 100, TOL) == 1


def test_missing_pods_count_as_target_down_and_zero_up():
    # Scale-down: two pods at 50% and one running pod with no sample (counted at 100%): 200 / 3 -> ceil(2.0) = 2.
    pods = [*ready(50, 50), PodSample("running", None)]
    assert pods_proposal(pods, 3, 100, TOL) == 2
    # Without the missing pod the same two pods would propose ceil(0.5 x 2) = 1.
    assert pods_proposal(ready(50, 50), 2, 100, TOL) == 1
    # Scale-up: missing pods count as 0: two pods at 300% and one missing: 600 / 3 = 200% -> 6.
    assert pods_proposal([*ready(300, 300), PodSample("running", None)], 3, 100, TOL) == 6
    # No pod has a sample: the metric cannot propose anything (HPA-9).
    assert pods_proposal([PodSample("running", None)], 1, 100, TOL) is None


def test_external_value_and_average_value_targets():
    # HPA-7, Value: ratio x ready pods; from zero replicas ceil(ratio).
    assert external_proposal(3.0, current=4, ready=3, target=1.0, tolerance=TOL, average=False) == 9
    assert external_proposal(2.5, current=0, ready=0, target=1.0, tolerance=TOL, average=False) == 3
    assert external_proposal(1.05, current=4, ready=4, target=1.0, tolerance=TOL, average=False) == 4
    # HPA-8, AverageValue: ceil(total / target per pod), whatever the current count (outside tolerance).
    assert external_proposal(95.0, current=2, ready=2, target=10.0, tolerance=TOL, average=True) == 10
    assert external_proposal(21.0, current=2, ready=2, target=10.0, tolerance=TOL, average=True) == 2


def test_default_scale_up_is_max_of_doubling_and_four_pods_per_15s():
    hpa = Hpa(min_replicas=1, max_replicas=100)
    assert hpa.decide(0.0, 1, [50]) == 5  # max(2 x 1, 1 + 4): HPA-12's comparison, 5 with behavior defaults
    assert hpa.decide(15.0, 5, [50]) == 10  # the event at t=0 has left the 15 s period
    assert hpa.decide(30.0, 10, [50]) == 20


def test_scale_up_limit_counts_replicas_added_within_the_period():
    rules = Direction(0.0, (RatePolicy("pods", 4, 60.0),))
    assert scale_up_limit(5, [(0.0, 4)], 15.0, rules) == 5  # 4 added in the last 60 s: start was 1, limit 1 + 4
    assert scale_up_limit(5, [(0.0, 4)], 61.0, rules) == 9


def test_rate_limits_count_changes_in_both_directions_within_the_period():
    from sim.autoscale.hpa import scale_down_limit

    up = Direction(0.0, (RatePolicy("percent", 100, 60.0),))
    # 4 -> 2 within the period: the period started at 4, so doubling allows 8 (not 2 x 2 + ...).
    assert scale_up_limit(2, [(10.0, -2)], 30.0, up) == 8
    down = Direction(0.0, (RatePolicy("pods", 1, 15.0),))
    # 2 -> 5 within the period: it started at 2, so one pod down from there is 1.
    assert scale_down_limit(5, [(10.0, 3)], 20.0, down) == 1


def test_scale_down_follows_the_max_recommendation_of_the_last_five_minutes():
    hpa = Hpa(min_replicas=1, max_replicas=100)
    assert hpa.decide(0.0, 10, [10]) == 10
    assert hpa.decide(15.0, 10, [5]) == 10  # the recommendation of 10 at t=0 is still in the 300 s window
    assert hpa.decide(150.0, 10, [3]) == 10
    assert hpa.decide(299.0, 10, [3]) == 10
    assert hpa.decide(300.0, 10, [3]) == 5  # t=0 + 300 s is not after now: out; the max is t=15's 5
    assert hpa.decide(314.0, 5, [3]) == 5
    assert hpa.decide(315.0, 5, [3]) == 3


def test_documented_scale_down_policies_example():
    # behavior.scaleDown: Pods 4 per 60 s and Percent 10 per 60 s (selectPolicy Max), from 80 replicas to 10:
    # "during the first step 8 replicas will be reduced. In the next iteration when the number of replicas is 72,
    # 10% of the pods is 7.2 but the number is rounded up to 8 ... When the number of replicas falls below 40 the
    # first policy (Pods) is applied and 4 replicas will be reduced at a time."
    down = Direction(0.0, (RatePolicy("pods", 4, 60.0), RatePolicy("percent", 10, 60.0)))
    hpa = Hpa(min_replicas=1, max_replicas=100, scale_down=down)
    counts, n, t = [], 80, 0.0
    while n > 10:
        n = hpa.decide(t, n, [10])
        counts.append(n)
        t += 60.0
    # 10% rounds the count down (floor(72 x 0.9) = 64: 8 removed); below 40, 4 pods beats 10%; the last step stops
    # at the target.
    assert counts == [72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 10]


def test_disabled_scale_down_and_bounds():
    hpa = Hpa(min_replicas=2, max_replicas=6, scale_down=Direction(0.0, (RatePolicy("percent", 100, 15.0),),
                                                                   "disabled"))
    assert hpa.decide(0.0, 4, [1]) == 4
    assert hpa.decide(15.0, 4, [50]) == 6  # clamped to max_replicas
    assert hpa.decide(30.0, 8, [8]) == 6  # above max: back to max
    assert hpa.decide(45.0, 1, [1]) == 2  # below min: up to min


def test_multiple_metrics_take_the_max_and_a_failed_metric_blocks_scale_down():
    hpa = Hpa(min_replicas=1, max_replicas=100, scale_down=Direction(0.0, (RatePolicy("percent", 100, 15.0),)))
    assert hpa.decide(0.0, 4, [2, 7, 3]) == 7
    assert hpa.decide(15.0, 7, [None, 3]) == 7  # HPA-9: skip scaling down this cycle
    assert hpa.decide(30.0, 7, [None, 9]) == 9  # up is still allowed
    assert hpa.decide(45.0, 9, [None, None]) == 9


def test_scaled_to_zero_by_hand_the_hpa_stands_aside_unless_min_is_zero():
    assert Hpa(min_replicas=1, max_replicas=5).decide(0.0, 0, [3]) == 0
    assert Hpa(min_replicas=0, max_replicas=5).decide(0.0, 0, [3]) == 3


def test_tolerance_holds_at_exactly_ten_percent_either_way():
    """HPA-3 as Kubernetes tests it, 1 - tol <= ratio <= 1 + tol: 11 against a target of 10 holds, as 9 does (abs(1 -
    ratio) would round 1.1 outside)."""
    assert pods_proposal(ready(*[11] * 10), 10, 10, TOL) == 10
    assert pods_proposal(ready(*[9] * 10), 10, 10, TOL) == 10
    assert pods_proposal(ready(5.5, 5.5, 5.5, 5.5), 4, 5, TOL) == 4
    assert external_proposal(4.4, 4, 4, 1, TOL, True) == 4
    assert external_proposal(11.0, 4, 4, 10, TOL, False) == 4
    assert pods_proposal(ready(*[11.01] * 10), 10, 10, TOL) == 12  # just outside: ceil(1.101 x 10)
