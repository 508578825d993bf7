"""The Kubernetes HorizontalPodAutoscaler (``autoscaling/v2``), as pure functions over a metrics snapshot.

Follows ``../shared/reference/gpu-sharing-autoscaling-cost.md`` section 1.1 (rules HPA-1 to HPA-13), which restates
``pkg/controller/podautoscaler/replica_calculator.go`` and ``horizontal.go``:

- :func:`pods_proposal`: a per-pod metric with an ``AverageValue`` target, with the conservative treatment of
  not-yet-running and metric-less pods (HPA-4 to HPA-6).
- :func:`external_proposal`: an external metric with a ``Value`` (HPA-7) or ``AverageValue`` (HPA-8) target.
- :class:`Hpa`: the controller step: the max over metrics (HPA-1, HPA-9), then stabilisation (HPA-10), then the
  scale-up and scale-down rate policies (HPA-11), clamped to ``[min_replicas, max_replicas]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

#: A proposal equal to the current count because the metric is within tolerance or the data cannot say.
Proposal = int | None


@dataclass(frozen=True, slots=True)
class PodSample:
    """One pod as the HPA sees it: ``phase`` is ``pending`` (no container yet: provisioning, image pull),
    ``running`` (container up; ``value`` None while the engine loads and exports no metric) or ``ready``."""

    phase: str
    value: float | None


def _within(ratio: float, tolerance: float) -> bool:
    """Whether a usage ratio is within tolerance of 1, as Kubernetes tests it (``1 - tol <= ratio <= 1 + tol``):
    ``abs(1 - ratio)`` would put 1.1 outside a 0.1 tolerance and 0.9 inside, by rounding."""
    return 1.0 - tolerance <= ratio <= 1.0 + tolerance


def pods_proposal(pods: Sequence[PodSample], current: int, target: float, tolerance: float) -> Proposal:
    """Replicas proposed by a Pods metric (HPA-2 to HPA-6); None when no pod has a sample (HPA-9 skips it).

    Pending pods are *unready*: counted at 0 only when scaling up. Running pods without a sample are *missing*:
    counted at the target when scaling down and at 0 when scaling up. If filling them in flips the direction or
    lands within tolerance, the count stays.
    """
    values = [p.value for p in pods if p.phase != "pending" and p.value is not None]
    unready = sum(p.phase == "pending" for p in pods)
    missing = sum(p.phase != "pending" and p.value is None for p in pods)
    if not values:
        return None
    ratio = sum(values) / len(values) / target
    scale_up_with_unready = unready > 0 and ratio > 1.0
    if not scale_up_with_unready and missing == 0:
        if _within(ratio, tolerance):
            return current
        return math.ceil(ratio * len(values))
    filled = list(values)
    if missing:
        filled += [target if ratio < 1.0 else 0.0] * missing
    if scale_up_with_unready:
        filled += [0.0] * unready
    new_ratio = sum(filled) / len(filled) / target
    if _within(new_ratio, tolerance) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposal = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current
    return proposal


def external_proposal(value: float | None, current: int, ready: int, target: float, tolerance: float,
                      average: bool) -> Proposal:
    """Replicas proposed by an External metric: ``Value`` target, ``ceil(ratio x ready pods)`` (HPA-7; from zero
    replicas ``ceil(ratio)``), or ``AverageValue`` target, ``ceil(value / target)`` (HPA-8)."""
    if value is None:
        return None
    if average:
        ratio = value / (target * current) if current else math.inf
        if current and _within(ratio, tolerance):
            return current
        return math.ceil(value / target)
    ratio = value / target
    if current == 0:
        return math.ceil(ratio)
    if _within(ratio, tolerance):
        return current
    return math.ceil(ratio * ready)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """``type`` ``pods`` or ``percent``: at most ``value`` pods or percent of the count per ``period_s``."""

    type: str
    value: int
    period_s: float


@dataclass(frozen=True, slots=True)
class Direction:
    """One direction of ``behavior``: stabilisation window, rate policies and how to pick among them."""

    stabilization_window_s: float
    policies: tuple[RatePolicy, ...]
    select_policy: str = "max"  # max | min | disabled


#: ``behavior`` defaults (reference Table 1.1): up at once by max(100%, 4 pods) per 15 s; down after 300 s of
#: stabilisation, by up to 100% per 15 s.
SCALE_UP = Direction(0.0, (RatePolicy("percent", 100, 15.0), RatePolicy("pods", 4, 15.0)))
SCALE_DOWN = Direction(300.0, (RatePolicy("percent", 100, 15.0),))


def _changed_within(events: Sequence[tuple[float, int]], now_s: float, period_s: float, sign: int) -> int:
    return sum(abs(n) for t, n in events if t > now_s - period_s and (n > 0) == (sign > 0))


def _period_start(current: int, events: Sequence[tuple[float, int]], now_s: float, period_s: float) -> int:
    """The count at the start of the period: replicas added within it taken off, replicas removed put back."""
    return current - _changed_within(events, now_s, period_s, +1) + _changed_within(events, now_s, period_s, -1)


def scale_up_limit(current: int, events: Sequence[tuple[float, int]], now_s: float, rules: Direction) -> int:
    """The most replicas the scale-up policies allow now (HPA-11); ``events`` are ``(time, change)``."""
    if rules.select_policy == "disabled":
        return current
    limits = []
    for p in rules.policies:
        start = _period_start(current, events, now_s, p.period_s)
        limits.append(start + p.value if p.type == "pods" else math.ceil(start * (1 + p.value / 100)))
    return max(limits) if rules.select_policy == "max" else min(limits)


def scale_down_limit(current: int, events: Sequence[tuple[float, int]], now_s: float, rules: Direction) -> int:
    """The fewest replicas the scale-down policies allow now (HPA-11)."""
    if rules.select_policy == "disabled":
        return current
    limits = []
    for p in rules.policies:
        start = _period_start(current, events, now_s, p.period_s)
        limits.append(start - p.value if p.type == "pods" else int(start * (1 - p.value / 100)))
    return min(limits) if rules.select_policy == "max" else max(limits)


@dataclass
class Hpa:
    """One HPA's state across sync periods: its recommendation history and its scale events."""

    min_replicas: int
    max_replicas: int
    scale_up: Direction = SCALE_UP
    scale_down: Direction = SCALE_DOWN
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)

    def decide(self, now_s: float, current: int, proposals: Sequence[Proposal]) -> int:
        """The replica count after one sync: ``proposals`` are the metrics' (None where a metric failed)."""
        if current == 0 and self.min_replicas > 0:
            return current  # HPA-13: scaled to zero by hand, the HPA stands aside
        valid = [p for p in proposals if p is not None]
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        elif not valid or (len(valid) < len(proposals) and max(valid) < current):
            return current  # HPA-9: no metric, or some failed and the rest say down: skip this cycle
        else:
            desired = self._normalize(now_s, current, max(valid))
        if desired != current:
            self.events.append((now_s, desired - current))
        horizon = max(self.scale_up.stabilization_window_s, self.scale_down.stabilization_window_s,
                      *(p.period_s for p in (*self.scale_up.policies, *self.scale_down.policies)))
        self.events = [e for e in self.events if e[0] > now_s - horizon]
        return desired

    def _normalize(self, now_s: float, current: int, proposal: int) -> int:
        up = down = proposal
        for t, rec in self.recommendations:
            if t > now_s - self.scale_up.stabilization_window_s:
                up = min(up, rec)
            if t > now_s - self.scale_down.stabilization_window_s:
                down = max(down, rec)
        self.recommendations = [(t, r) for t, r in self.recommendations
                                if t > now_s - max(self.scale_up.stabilization_window_s,
                                                   self.scale_down.stabilization_window_s)]
        self.recommendations.append((now_s, proposal))
        desired = min(max(current, up), down)
        if desired > current:
            limit = max(scale_up_limit(current, self.events, now_s, self.scale_up), current)
            desired = min(desired, self.max_replicas, limit)
        elif desired < current:
            limit = min(scale_down_limit(current, self.events, now_s, self.scale_down), current)
            desired = max(desired, self.min_replicas, limit)
        return min(max(desired, self.min_replicas), self.max_replicas)
