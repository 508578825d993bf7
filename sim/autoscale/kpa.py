"""The Knative Pod Autoscaler's decider, as a pure state machine over per-second metric samples.

Follows ``../shared/reference/gpu-sharing-autoscaling-cost.md`` section 1.3 (KPA-1 to KPA-5), which restates
``knative/serving`` ``pkg/autoscaler/scaling/autoscaler.go``: stable and panic windowed averages of the observed
concurrency (or requests per second), rate limits relative to the ready pods, panic mode entered when the panic
window asks for ``panic_threshold`` times the ready pods and left after a stable window without that, a scale-down
delay, bounds, and scale to zero after a grace period.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Kpa:
    """One revision's decider. ``target`` is per pod (e.g. 100 x 0.7 = 70 in-flight requests)."""

    target: float
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_down_delay_s: float = 0.0
    min_scale: int = 0
    max_scale: int = 0  # 0: unlimited
    activation_scale: int = 1
    scale_to_zero_grace_s: float = 30.0
    samples: deque = field(default_factory=deque)  # (time, total observed value)
    panic_since: float | None = None  # when the current panic episode was last extended
    max_panic_pods: int = 0
    recent: deque = field(default_factory=deque)  # (time, desired) within the scale-down delay
    zero_since: float | None = None

    def observe(self, now_s: float, value: float) -> None:
        """One per-second sample of the pods' total concurrency (or requests per second)."""
        self.samples.append((now_s, value))
        while self.samples and self.samples[0][0] <= now_s - self.stable_window_s:
            self.samples.popleft()

    def _average(self, now_s: float, window_s: float) -> float | None:
        values = [v for t, v in self.samples if t > now_s - window_s]
        return sum(values) / len(values) if values else None

    @property
    def in_panic(self) -> bool:
        return self.panic_since is not None

    def decide(self, now_s: float, ready: int, current: int) -> int:
        """The pod count for this tick (KPA-2 to KPA-5); ``current`` counts starting pods too."""
        stable = self._average(now_s, self.stable_window_s)
        panic = self._average(now_s, self.panic_window_s)
        if stable is None:
            return current  # no data yet: hold
        ready_pods = max(1, ready)
        max_up = math.ceil(self.max_scale_up_rate * ready_pods)
        max_down = math.floor(ready_pods / self.max_scale_down_rate)
        raw_panic = math.ceil((panic or 0.0) / self.target)  # no sample in the panic window: nothing observed
        want_stable = min(max(math.ceil(stable / self.target), max_down), max_up)
        want_panic = min(max(raw_panic, max_down), max_up)
        if raw_panic / ready_pods >= self.panic_threshold:
            self.panic_since = now_s  # enter, or extend, the panic episode
        elif self.in_panic and now_s > self.panic_since + self.stable_window_s:
            self.panic_since = None  # a whole stable window without a tick over the threshold
            self.max_panic_pods = 0
        if self.in_panic:
            desired = max(want_stable, want_panic, self.max_panic_pods)  # never down during panic
            self.max_panic_pods = desired
        else:
            desired = want_stable
        # KPA-4: act on the max over the scale-down delay.
        self.recent.append((now_s, desired))
        while self.recent and self.recent[0][0] <= now_s - self.scale_down_delay_s:
            self.recent.popleft()
        if self.recent:
            desired = max(d for _, d in self.recent)
        # KPA-5: bounds, activation from zero, and the grace period before the last pod goes.
        if self.max_scale:
            desired = min(desired, self.max_scale)
        desired = max(desired, self.min_scale)
        if desired > 0:  # Knative floors every non-zero count at activation-scale, not only the one from zero
            desired = max(desired, self.activation_scale)
        if desired == 0 and current > 0:
            self.zero_since = now_s if self.zero_since is None else self.zero_since
            if now_s - self.zero_since < self.scale_to_zero_grace_s:
                return 1  # the last pod stays through the grace period
        else:
            self.zero_since = None
        return desired
