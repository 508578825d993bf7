"""Time on one shared physical GPU: when each tenant's GPU work runs, and how long it takes.

A replica on a shared GPU hands each engine step to its GPU as ``work_s`` (the step's time on the GPU alone)
and waits for :meth:`run`'s event. Two fidelities of time-slicing (reference VG-6):

- :class:`QuantumGpu` simulates every slice: a round robin over the policy's slot cycle, ``slice_s`` of work per
  slot, ``switch_s`` of dead time whenever the GPU turns to a different tenant's work. Exact, and costs events
  in proportion to ``work / slice``.
- :class:`FluidGpu` is the processor-sharing limit of the same cycle: each tenant with work progresses at its
  time fraction of the cycle, recomputed whenever a tenant starts or finishes work. One event per step.

They agree when a step is long compared with a slice (decode steps of 10-50 ms against 1-2 ms slices); with steps
shorter than a slice, the quantum model lets a VM finish several steps in one slice and the fluid model does not
see the slice at all. Use ``fluid`` for sweeps and ``quantum`` to check a configuration's jitter.

The slot cycle is the policy's one decision (NVIDIA's schedulers, reference Table 3.1 and VG-6):

- best effort: one slot per resident VM; slots of VMs without work are skipped (work-conserving).
- equal share: one slot per resident VM; a slot with no work stays idle, so each VM gets 1 / (resident VMs).
- fixed share: one slot per VM the profile allows on a GPU; empty and idle slots stay idle (1 / max VMs).
"""

from __future__ import annotations

from collections.abc import Sequence

import simpy

#: Work left below this (seconds) counts as done: it is float rounding of a completion time.
_EPS_S = 1e-12


class BestEffort:
    """Work-conserving round robin over the resident VMs (NVIDIA's default scheduler)."""

    work_conserving = True

    def cycle(self, tenants: int, max_tenants: int) -> tuple[int | None, ...]:
        return tuple(range(tenants))


class EqualShare:
    """Strict round robin over the resident VMs; a slot without work stays idle."""

    work_conserving = False

    def cycle(self, tenants: int, max_tenants: int) -> tuple[int | None, ...]:
        return tuple(range(tenants))


class FixedShare:
    """Strict round robin over the profile's maximum number of VMs; empty slots stay idle."""

    work_conserving = False

    def cycle(self, tenants: int, max_tenants: int) -> tuple[int | None, ...]:
        return tuple(i if i < tenants else None for i in range(max(tenants, max_tenants)))


SLICE_POLICIES = {"best_effort": BestEffort, "equal_share": EqualShare, "fixed_share": FixedShare}


def mps_fractions(sm_share: Sequence[float]):
    """MPS clients run concurrently, each on its SM share; when the active clients' shares add up to more than
    the whole GPU, they slow down in proportion (reference SH-2)."""

    def fractions(has_work: Sequence[bool]) -> tuple[list[float], float]:
        demand = sum(s for s, busy in zip(sm_share, has_work, strict=True) if busy)
        rate = 1 / max(1.0, demand)
        return [rate if busy else 0.0 for busy in has_work], 0.0

    return fractions


def slot_fractions(cycle: Sequence[int | None], work_conserving: bool, has_work: Sequence[bool], slice_s: float,
                   switch_s: float) -> tuple[list[float], float]:
    """Each tenant's fraction of GPU time over the cycle given who has work, and the fraction lost to switches.

    A slot of a tenant with work is ``slice_s`` of its work, after ``switch_s`` when two or more tenants take
    turns; an idle slot is skipped if the policy is work-conserving, else it lasts ``slice_s``.
    """
    active = [owner for owner in cycle if owner is not None and has_work[owner]]
    rates = [0.0] * len(has_work)
    if not active:
        return rates, 0.0
    switch = switch_s if len(set(active)) > 1 else 0.0
    idle = 0 if work_conserving else len(cycle) - len(active)
    length = len(active) * (slice_s + switch) + idle * slice_s
    for owner in active:
        rates[owner] += slice_s / length
    return rates, len(active) * switch / length


class FluidGpu:
    """Processor sharing at rates given by ``fractions(has_work) -> (rate per tenant, switch fraction)``.

    ``gpu_weight[i]`` converts tenant ``i``'s work into GPU time (1 for time-slicing, where work is priced on the
    whole GPU; the SM share for MPS, where it is priced on the share).
    """

    def __init__(self, env: simpy.Environment, tenants: int, fractions, gpu_weight: Sequence[float] | None = None):
        self.env = env
        self.fractions = fractions
        self.gpu_weight = list(gpu_weight) if gpu_weight is not None else [1.0] * tenants
        self.left_s = [0.0] * tenants
        self.waiting: list[simpy.Event | None] = [None] * tenants
        self.work_s = [0.0] * tenants  # work done per tenant
        self.switch_s = 0.0
        self._rates = [0.0] * tenants
        self._switch = 0.0
        self._since = env.now
        self._timer = 0  # generation of the completion timer that is current

    def run(self, tenant: int, work_s: float) -> simpy.Event:
        """Start ``work_s`` of tenant ``tenant``'s work (it has none in progress); the event fires when done."""
        self.advance()
        done = self.env.event()
        if work_s <= 0:
            return done.succeed()
        self.left_s[tenant] = work_s
        self.waiting[tenant] = done
        self._replan()
        return done

    def advance(self) -> None:
        """Bring the work counters up to now."""
        dt = self.env.now - self._since
        if dt > 0:
            for i, rate in enumerate(self._rates):
                if rate:
                    self.left_s[i] -= rate * dt
                    self.work_s[i] += rate * dt
            self.switch_s += self._switch * dt
        self._since = self.env.now

    def usage(self) -> tuple[list[float], float]:
        """Work done per tenant (in the tenant's own time units) and switch time so far."""
        self.advance()
        return list(self.work_s), self.switch_s

    def _replan(self) -> None:
        self._rates, self._switch = self.fractions([e is not None for e in self.waiting])
        self._timer += 1
        finish = [(self.left_s[i] / r, i) for i, r in enumerate(self._rates) if r > 0]
        if finish:
            delay, first = min(finish)
            timer = self.env.timeout(max(delay, 0.0))
            timer.callbacks.append(lambda _, gen=self._timer, first=first: self._complete(gen, first))

    def _complete(self, gen: int, first: int) -> None:
        if gen != self._timer:
            return  # a start or finish since re-planned the rates
        self.advance()
        self.left_s[first] = 0.0
        for i, event in enumerate(self.waiting):
            if event is not None and self.left_s[i] <= _EPS_S:
                self.left_s[i] = 0.0
                self.waiting[i] = None
                event.succeed()
        self._replan()


class QuantumGpu:
    """Round robin over ``cycle``, every slice simulated (a SimPy process of its own)."""

    def __init__(self, env: simpy.Environment, tenants: int, cycle: Sequence[int | None], work_conserving: bool,
                 slice_s: float, switch_s: float):
        self.env = env
        self.cycle = tuple(cycle)
        self.work_conserving = work_conserving
        self.slice_s = slice_s
        self.switch_cost_s = switch_s
        self.gpu_weight = [1.0] * tenants
        self.left_s = [0.0] * tenants
        self.waiting: list[simpy.Event | None] = [None] * tenants
        self.work_s = [0.0] * tenants
        self.switch_s = 0.0
        self._wake: simpy.Event | None = None
        self._in_slice: tuple[int, float] | None = None  # (tenant, slice start) of the work piece in progress
        env.process(self._loop())

    def run(self, tenant: int, work_s: float) -> simpy.Event:
        done = self.env.event()
        if work_s <= 0:
            return done.succeed()
        self.left_s[tenant] = work_s
        self.waiting[tenant] = done
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        return done

    def usage(self) -> tuple[list[float], float]:
        """Work done per tenant (GPU seconds) and switch time so far, counting the piece in progress."""
        work = list(self.work_s)
        if self._in_slice is not None:
            tenant, since = self._in_slice
            work[tenant] += self.env.now - since
        return work, self.switch_s

    def _loop(self):
        env, cycle, q = self.env, self.cycle, self.slice_s
        slot, last = -1, None
        while True:
            slot_left = q
            if all(e is None for e in self.waiting):
                idle_from = env.now
                self._wake = env.event()
                yield self._wake
                self._wake = None
                if not self.work_conserving:
                    # A strict round robin keeps turning while the GPU is idle: resume in the slot the clock is in,
                    # with what is left of it.
                    elapsed = env.now - idle_from
                    turned = int(elapsed // q)
                    slot = (slot + turned) % len(cycle)
                    slot_left = max(0.0, q - (elapsed - turned * q))  # never below 0 by rounding
            slot = (slot + 1) % len(cycle)
            owner = cycle[slot]
            if owner is None or self.waiting[owner] is None:
                if not self.work_conserving:
                    yield env.timeout(slot_left)  # an idle slot; its owner waits for its next turn
                continue
            if last is not None and owner != last and self.switch_cost_s:
                yield env.timeout(self.switch_cost_s)
                self.switch_s += self.switch_cost_s
            last = owner
            left = slot_left
            while left > _EPS_S and self.waiting[owner] is not None:
                take = min(left, self.left_s[owner])
                self._in_slice = (owner, env.now)
                yield env.timeout(take)
                self._in_slice = None
                self.work_s[owner] += take
                self.left_s[owner] -= take
                left -= take
                if self.left_s[owner] <= _EPS_S:
                    event, self.waiting[owner] = self.waiting[owner], None
                    self.left_s[owner] = 0.0
                    event.succeed()
                    yield env.timeout(0)  # let the tenant hand over its next step within this slice
            if left > _EPS_S and not self.work_conserving:
                yield env.timeout(left)  # the rest of a strict slot stays idle

def sm_share(sharing) -> float:
    """An MPS client's share of the SMs (``active_thread_percentage``, default an equal split)."""
    return (sharing.active_thread_percentage or 100 / sharing.replicas_per_gpu) / 100


def slice_settings(gpu, sharing) -> tuple[float, float]:
    """``(slice_s, switch_s)`` of a time-sliced physical GPU (VG-4 defaults for vGPU; 2 ms for Kubernetes
    time-slicing, whose CUDA default NVIDIA does not publish: about 2.3 ms was measured on an RTX 4090, SH-1)."""
    from sim.sharing import vgpu

    if sharing.time_slice_ms is not None:
        slice_s = sharing.time_slice_ms / 1000
    elif sharing.mode == "vgpu":
        slice_s = vgpu.default_time_slice_s(gpu.gpu, [t.profile for t in gpu.tenants])
    else:
        slice_s = 0.002
    return slice_s, sharing.switch_cost_us / 1e6


def build_share(env: simpy.Environment, gpu, sharing_of) -> FluidGpu | QuantumGpu | None:
    """The runtime of one physical GPU (a :class:`~sim.sharing.placement.PhysicalGpu`) whose tenants share it in
    time, or None where they do not interact (MIG instances are isolated). ``sharing_of(pool)``: a tenant pool's
    sharing settings (those of the GPU itself are the same for every pool of a group)."""
    k = len(gpu.tenants)
    sharing = sharing_of(gpu.tenants[0].pool)
    if sharing.mode == "mps":
        share = [sm_share(sharing_of(t.pool)) for t in gpu.tenants]
        return FluidGpu(env, k, mps_fractions(share), gpu_weight=share)
    if sharing.mode not in ("vgpu", "timeslice"):
        return None
    if sharing.mode == "vgpu":
        policy = SLICE_POLICIES[sharing.scheduler]()
        most = max(gpu.gpu.vgpu_profiles[t.profile].max_equal for t in gpu.tenants)
    else:
        policy, most = BestEffort(), sharing.replicas_per_gpu
    cycle = policy.cycle(k, most)
    slice_s, switch_s = slice_settings(gpu, sharing)
    if sharing.fidelity == "quantum":
        return QuantumGpu(env, k, cycle, policy.work_conserving, slice_s, switch_s)
    return FluidGpu(env, k, lambda has_work: slot_fractions(cycle, policy.work_conserving, has_work, slice_s,
                                                            switch_s))
