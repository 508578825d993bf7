"""Time on a shared GPU (sim/sharing/slicing.py): processor-sharing theory, NVIDIA's three schedulers, and where
the fluid and quantum fidelities agree."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from scipy import stats

from sim.sharing.slicing import (
    SLICE_POLICIES,
    FluidGpu,
    QuantumGpu,
    mps_fractions,
    slot_fractions,
)

SLOTS = 64  # tenant slots of the processor-sharing server (more than the jobs ever in the system at once)


def ps_server(env: simpy.Environment) -> FluidGpu:
    """A best-effort GPU with no switch cost and one tenant per job: an egalitarian processor-sharing server."""
    cycle = tuple(range(SLOTS))
    return FluidGpu(env, SLOTS, lambda has_work: slot_fractions(cycle, True, has_work, 1e-3, 0.0))


def ps_responses(sizes: np.ndarray, rate_per_s: float, seed: int) -> np.ndarray:
    """Response times of jobs of ``sizes`` arriving as a Poisson process at a processor-sharing server."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / rate_per_s, len(sizes))
    env = simpy.Environment()
    gpu = ps_server(env)
    free = list(range(SLOTS))
    out = np.empty(len(sizes))

    def job(i):
        slot = free.pop()
        start = env.now
        yield gpu.run(slot, float(sizes[i]))
        out[i] = env.now - start
        free.append(slot)

    def arrivals():
        for i, gap in enumerate(gaps):
            yield env.timeout(gap)
            env.process(job(i))

    env.process(arrivals())
    env.run()
    return out


def mean_ci(values: list[float], level: float = 0.99) -> tuple[float, float]:
    v = np.asarray(values)
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def test_mm1_ps_mean_response_is_one_over_mu_minus_lambda():
    mu, lam, n, warm = 1.0, 0.7, 3000, 300
    means = []
    for rep in range(12):
        sizes = np.random.default_rng(1000 + rep).exponential(1 / mu, n)
        means.append(ps_responses(sizes, lam, seed=rep)[warm:].mean())
    mean, half = mean_ci(means)
    assert abs(mean - 1 / (mu - lam)) < half, (mean, half)


def test_mg1_ps_job_of_size_x_takes_x_over_one_minus_rho():
    # Two job sizes (a service distribution far from exponential): each size's mean response is x / (1 - rho).
    small, large, lam, n, warm = 0.25, 2.0, 0.5, 3000, 300
    rho = lam * (small + large) / 2
    ratios = {small: [], large: []}
    for rep in range(12):
        sizes = np.random.default_rng(2000 + rep).choice([small, large], n)
        resp = ps_responses(sizes, lam, seed=100 + rep)[warm:]
        for x in (small, large):
            ratios[x].append(resp[sizes[warm:] == x].mean() / x)
    for x, values in ratios.items():
        mean, half = mean_ci(values)
        assert abs(mean - 1 / (1 - rho)) < half, (x, mean, half)


def saturate(env, gpu, tenants, step_s, steps_done):
    """Each tenant in ``tenants`` submits steps of ``step_s`` back to back for ever."""

    def loop(i):
        while True:
            yield gpu.run(i, step_s)
            steps_done[i] += 1

    for i in tenants:
        env.process(loop(i))


def make_gpu(fidelity, scheduler, tenants, max_tenants, slice_s, switch_s, env):
    policy = SLICE_POLICIES[scheduler]()
    cycle = policy.cycle(tenants, max_tenants)
    if fidelity == "quantum":
        return QuantumGpu(env, tenants, cycle, policy.work_conserving, slice_s, switch_s)
    return FluidGpu(env, tenants, lambda w: slot_fractions(cycle, policy.work_conserving, w, slice_s, switch_s))


def shares(fidelity, scheduler, tenants, busy, max_tenants=8, slice_s=0.002, switch_s=50e-6, step_s=0.013,
           horizon_s=20.0):
    env = simpy.Environment()
    gpu = make_gpu(fidelity, scheduler, tenants, max_tenants, slice_s, switch_s, env)
    steps = [0] * tenants
    saturate(env, gpu, busy, step_s, steps)
    env.run(until=horizon_s)
    work, switch = gpu.usage()
    return np.array(work) / horizon_s, switch / horizon_s


@pytest.mark.parametrize("fidelity", ["fluid", "quantum"])
def test_equal_share_gives_each_of_n_saturated_vms_one_nth_minus_switches(fidelity):
    q, c = 0.002, 50e-6
    for n in (2, 3, 4):
        got, switching = shares(fidelity, "equal_share", n, range(n), slice_s=q, switch_s=c)
        np.testing.assert_allclose(got, q / (n * (q + c)), rtol=0.01)
        assert got.sum() + switching == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("fidelity", ["fluid", "quantum"])
def test_best_effort_gives_an_idle_vms_share_to_the_busy_ones(fidelity):
    q, c = 0.002, 50e-6
    got, _ = shares(fidelity, "best_effort", 4, busy=[1, 2, 3], slice_s=q, switch_s=c)
    assert got[0] == 0
    np.testing.assert_allclose(got[1:], q / (3 * (q + c)), rtol=0.01)  # 1/3 each, not 1/4
    alone, switching = shares(fidelity, "best_effort", 4, busy=[2], slice_s=q, switch_s=c)
    assert alone[2] == pytest.approx(1.0, rel=1e-6) and switching == 0  # no other work: no switches


@pytest.mark.parametrize("fidelity", ["fluid", "quantum"])
def test_equal_and_fixed_share_do_not_give_idle_time_away(fidelity):
    q, c = 0.002, 50e-6
    # Equal share: 1 / (resident VMs), busy or not.
    got, _ = shares(fidelity, "equal_share", 4, busy=[1, 2, 3], slice_s=q, switch_s=c)
    np.testing.assert_allclose(got[1:], q / (4 * q + 3 * c), rtol=0.01)
    # Fixed share: 1 / (VMs the profile allows), however many are resident (here 2 VMs of a max-4 profile).
    got, _ = shares(fidelity, "fixed_share", 2, busy=[0, 1], max_tenants=4, slice_s=q, switch_s=c)
    np.testing.assert_allclose(got, q / (4 * q + 2 * c), rtol=0.01)
    lone, _ = shares(fidelity, "fixed_share", 2, busy=[0], max_tenants=4, slice_s=q, switch_s=c)
    assert lone[0] == pytest.approx(0.25, rel=0.01)


def step_latencies(fidelity, step_s, slice_s, tenants=3, horizon_s=30.0):
    """Each saturated best-effort tenant's step latencies (submission to completion)."""
    env = simpy.Environment()
    gpu = make_gpu(fidelity, "best_effort", tenants, 8, slice_s, 0.0, env)
    lat: list[float] = []

    def loop(i):
        while True:
            start = env.now
            yield gpu.run(i, step_s)
            lat.append(env.now - start)

    for i in range(tenants):
        env.process(loop(i))
    env.run(until=horizon_s)
    return np.array(lat)


def test_fluid_and_quantum_agree_when_steps_are_long_compared_with_the_slice():
    # 30 ms steps, 1 ms slices: every step spans many slices, time-slicing is a rate divider (VG-6).
    fluid, quantum = step_latencies("fluid", 0.030, 0.001), step_latencies("quantum", 0.030, 0.001)
    assert quantum.mean() == pytest.approx(fluid.mean(), rel=0.02)
    assert np.percentile(quantum, 99) == pytest.approx(np.percentile(fluid, 99), rel=0.05)


def test_fluid_and_quantum_differ_when_steps_are_shorter_than_the_slice():
    # 2 ms steps, 20 ms slices: a VM runs ten steps in its slice, then waits 40 ms; the fluid model sees only
    # the average. Throughput (the mean) still agrees; the tail does not.
    fluid, quantum = step_latencies("fluid", 0.002, 0.020), step_latencies("quantum", 0.002, 0.020)
    assert quantum.mean() == pytest.approx(fluid.mean(), rel=0.05)
    assert np.percentile(fluid, 99) == pytest.approx(0.006, rel=1e-6)
    assert np.percentile(quantum, 99) > 5 * np.percentile(fluid, 99)


def test_mps_clients_run_concurrently_until_their_sm_shares_exceed_the_gpu():
    fractions = mps_fractions([0.5, 0.5, 0.5])
    assert fractions([True, True, False]) == ([1.0, 1.0, 0.0], 0.0)  # 100% of the SMs: no slowdown
    rates, _ = fractions([True, True, True])
    np.testing.assert_allclose(rates, [2 / 3] * 3)  # 150% asked for: each runs at 1 / 1.5


def test_strict_round_robin_keeps_turning_while_the_gpu_is_idle():
    # Fixed share, 4 slots of 2 ms, one VM (slot 0) with a lone 0.5 ms job now and then: the job waits for slot 0
    # of a cycle that kept turning, not for a cycle restarted when the job arrived. Over arrival phases spread
    # uniformly the mean completion is 0.5 + (wait for slot 0): about 2.8 ms; a restarted cycle would always wait
    # the three other slots (6.5 ms).
    env = simpy.Environment()
    gpu = make_gpu("quantum", "fixed_share", 1, 4, 0.002, 0.0, env)
    rng = np.random.default_rng(5)
    lat = []

    def jobs():
        for _ in range(400):
            yield env.timeout(0.05 + rng.uniform(0, 0.008))
            start = env.now
            yield gpu.run(0, 0.0005)
            lat.append(env.now - start)

    env.process(jobs())
    env.run()
    assert 0.0022 < np.mean(lat) < 0.0034
    assert min(lat) == pytest.approx(0.0005) and max(lat) <= 0.0065 + 1e-9
