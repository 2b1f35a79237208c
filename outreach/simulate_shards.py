"""A forecast split by patient across worker processes: which versions go to which shard, and
the processes that run the shards.

A patient's caps, quiet hours, preferences and journeys look only at that patient's own
versions, so each shard runs the real pipeline on its own store over the versions of its
patients and the shards add up to the single-process forecast. A resource belongs to the
patient it references (`rules.recipients.patient_reference`, as planning reads it); resources
that reference no patient go to shard 0. The one journey that looks across patients, a
`backfill:` offering a freed time to the waitlist, finds nobody in a forecast: it searches the
EHR for waitlisted appointments, and a forecast's EHR (the store's ingested versions) serves no
searches. Should it ever do, the split would no longer be exact."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from outreach.core import redact
from rules.recipients import patient_reference

Job = TypeVar("Job")
Result = TypeVar("Result")

# Below this many versions a process's start-up (imports, the journeys, a store) costs more than
# its share of the forecast saves; only the default worker count heeds it.
MIN_VERSIONS_PER_WORKER = 1_000


def cpus() -> int:
    """The CPUs this process may run on (os.process_cpu_count from Python 3.13)."""
    counted = getattr(os, "process_cpu_count", None)
    if counted is not None:
        return int(counted() or 1)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def default_workers(versions: int) -> int:
    """One worker per CPU, and none with too little to do to pay for its start."""
    return max(1, min(cpus(), versions // MIN_VERSIONS_PER_WORKER))


def partition(resources: Sequence[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """The resources split into at most `shards` non-empty lists, each patient's versions whole,
    in input order within each list. Patients are dealt out largest first to the least loaded
    shard, so the shards carry about the same number of versions."""
    owners = [patient_reference(r) for r in resources]
    sizes: dict[str, int] = {}
    for owner in owners:
        if owner is not None:
            sizes[owner] = sizes.get(owner, 0) + 1
    load = [0] * max(1, shards)
    load[0] = owners.count(None)
    home: dict[str, int] = {}
    # Stable: equal sizes keep their first-seen order, so the split does not depend on hashing.
    for owner in sorted(sizes, key=lambda o: -sizes[o]):
        index = min(range(len(load)), key=load.__getitem__)
        home[owner] = index
        load[index] += sizes[owner]
    split: list[list[dict[str, Any]]] = [[] for _ in load]
    for resource, owner in zip(resources, owners, strict=True):
        split[0 if owner is None else home[owner]].append(resource)
    return [part for part in split if part] or [[]]


def _logging(level: int) -> None:
    """A worker logs to stderr at its parent's level (the CLI keeps a forecast's to errors),
    contacts masked as in every process of ours."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact.install()


def run_all(work: Callable[[Job], Result], jobs: Sequence[Job]) -> list[Result]:
    """`work` over each job, one process each (in this process when there is one job), the
    results in the order of the jobs. Processes are started by forkserver (spawn where there is
    none), never forked from a process that may hold threads."""
    if len(jobs) == 1:
        return [work(jobs[0])]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        # The server imports the pipeline once; each worker forks from it ready to run.
        context.set_forkserver_preload([work.__module__])
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context, initializer=_logging,
                             initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
        return list(pool.map(work, jobs))
