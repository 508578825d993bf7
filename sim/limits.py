"""Upper bounds on sizes in user input.

Each is far above any real use and far below what would exhaust memory or run for ever: a number above one is a
typo or a wrong unit, reported as such (one line naming the file and field) before anything is allocated.
"""

from __future__ import annotations

#: Tokens in one prompt or output (no model has a longer context: Llama 4 Scout's is 10M).
MAX_TOKENS = 10_000_000
#: Requests one workload (or one traffic class) may send in a run.
MAX_REQUESTS = 100_000_000
#: Replicas of one pool (as the autoscalers' max_replicas).
MAX_REPLICAS = 10_000
#: Clients of a closed-loop workload.
MAX_CLIENTS = 1_000_000
#: Runs of one sweep (arms x replications).
MAX_RUNS = 100_000
#: Windows a fitted workload cuts its trace into.
MAX_WINDOWS = 1_000_000
#: Seconds in any duration, time or period of a scenario (about 31.7 years): beyond it a float clock can no longer
#: tell a millisecond step from no step at all, and a simulation would stand still.
MAX_SECONDS = 1e9
