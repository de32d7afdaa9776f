"""``--executor ray``: one Ray task per model × task group, records streamed back cell by cell.

Each ``GroupJob`` becomes one Ray *generator* task (``ray.remote(num_cpus=..., num_gpus=...)``
from the suite's ``executor.ray``); the task runs the same ``GroupWork`` as a local run and
yields each cell's ``Record`` as soon as it exists, so the driver receives (and the loop appends
to ``results.jsonl``, as the only writer) every cell when it finishes, not when its group does.
Records are small; artifacts (ONNX files, fp32 outputs) are written by the workers into the run
folder, which must be on storage every node reaches — never through the object store.

Latency: each latency cell still runs in its own fresh worker process with pinned threads
(``engines.timing.measure_in_subprocess``). Groups run side by side on a node, so every Ray task
sets ``QDQBENCH_TIMING_LOCK`` to a file in the node's own temp folder: a timed worker holds an
exclusive ``flock`` on it while it runs, and two timed cells never overlap on one node. Each
record names the node it ran on (``details.node``: ``core.env.node_facts``, hostname, CPU flags
and GPU).

Faults: the retries are the driver's, not Ray's (``max_retries=0`` on the task). When a task
dies mid-group (a worker or node lost), the driver resubmits the group with only the cells it
does not have yet, and the records it has as ``finished`` (an engine cell needs its export's
record), so nothing is computed or stored twice; after ``executor.ray.max_retries`` lost attempts
the remaining cells become failed records naming the reason, and the other groups go on. A
lost connection to the cluster itself (not a task's error) is ``ExecutorLost``: the run stops with
one line (exit 2), everything stored is kept and ``run --resume`` goes on. A driver killed outright
loses nothing either: every record it received is already in ``results.jsonl``, Ray ends the
driver's tasks with it, and the resume (with or without Ray) runs only the cells not stored.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from qdqbench.config.suite import RayExecutorSpec
from qdqbench.core.env import node_facts
from qdqbench.core.errors import QdqbenchError, one_line
from qdqbench.core.results import Record
from qdqbench.run.executor import ExecutorLost, GroupHooks, GroupJob, GroupWork

HEALTH_CHECK_S = 5.0  # while waiting for records: how often the cluster's head is checked
LOST_AFTER_S = 15.0  # the head unreachable this long: the cluster is lost (Ray's own limit is 60 s)
INSTALL_HINT = "--executor ray needs Ray: pip install 'qdqbench[ray]'"
TIMING_LOCK_NAME = "qdqbench-timing.lock"


def import_ray():
    """The ``ray`` module, or a one-line QdqbenchError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise QdqbenchError(INSTALL_HINT) from None
    return ray


def _run_group(work: GroupWork, job: GroupJob) -> Iterator[Record]:
    """The body of one Ray task (on a worker): the group's records, each naming this node."""
    from qdqbench.engines.timing import TIMING_LOCK_ENV

    os.environ[TIMING_LOCK_ENV] = os.path.join(tempfile.gettempdir(), TIMING_LOCK_NAME)
    node = node_facts()  # hostname, CPU flags, GPU: compare treats another node as another machine
    for rec in work(job, GroupHooks()):
        yield rec.model_copy(update={"details": {**(rec.details or {}), "node": node}})


class RayExecutor:
    """Runs each group as a Ray task on a local Ray instance or an existing cluster."""

    def __init__(self, address: str | None = None, spec: RayExecutorSpec | None = None,
                 local_cpus: int | None = None):
        self.address = address  # None: a local instance; "auto" or "ray://host:port": a cluster
        self.spec = spec or RayExecutorSpec()
        self.local_cpus = local_cpus
        self.ray = import_ray()
        self._gcs_address: str | None = None  # host:port of the cluster's head, checked while waiting
        self._unreachable_since: float | None = None

    def connect(self) -> None:
        """Start or join Ray (or use the instance this process already joined); one line
        (QdqbenchError) when the address cannot be reached or lacks the suite's resources."""
        ray = self.ray
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                      "include_dashboard": False, "logging_level": "ERROR"}
            if self.address:
                kwargs["address"] = self.address
            elif self.local_cpus is not None:
                kwargs["num_cpus"] = self.local_cpus
            try:
                ray.init(**kwargs)
            except Exception as exc:  # noqa: BLE001 — ConnectionError, RuntimeError, grpc errors alike
                where = self.address or "a local Ray instance"
                raise QdqbenchError(f"--ray-address {where}: cannot connect: {one_line(exc)}") from None
        try:
            self._gcs_address = ray.get_runtime_context().gcs_address
        except Exception:  # noqa: BLE001 — a ray:// client has none; its calls raise on a lost link
            self._gcs_address = None
        total = ray.cluster_resources()
        for name, wanted in (("CPU", self.spec.num_cpus), ("GPU", self.spec.num_gpus)):
            if wanted > total.get(name, 0):
                raise QdqbenchError(f"executor.ray.num_{name.lower()}s is {wanted:g} but the Ray cluster has "
                                    f"{total.get(name, 0):g} {name}s")

    def run(self, jobs: Sequence[GroupJob], work: GroupWork, hooks: GroupHooks) -> Iterator[Record]:
        """Every job's records as they arrive (any order across groups, cell order within one)."""
        if not jobs:
            return
        self.connect()
        ray = self.ray
        task = ray.remote(_run_group).options(num_cpus=self.spec.num_cpus, num_gpus=self.spec.num_gpus,
                                              max_retries=0, num_returns="streaming")
        self._suite = getattr(work, "suite", None)  # for the failed records of a group given up
        # generator -> (the job it runs, the records received for it so far, lost attempts)
        live: dict[Any, tuple[GroupJob, dict[str, Record], int]] = {}
        try:
            with self._cluster():
                work_ref = ray.put(work)
                for job in jobs:
                    live[task.remote(work_ref, job)] = (job, {}, 0)
            while live:
                with self._cluster():
                    ready: list = []
                    while not ready:
                        ready, _ = ray.wait(list(live), num_returns=1, timeout=HEALTH_CHECK_S)
                        if not ready:
                            self._check_head()
                    gen = ready[0]
                    job, got, lost = live[gen]
                    try:
                        ref = next(gen)
                    except StopIteration:
                        ref = None
                if ref is None:
                    del live[gen]
                    yield from self._missing(job, got, "the Ray task ended without a record")
                    continue
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    del live[gen]
                    if isinstance(exc, ray.exceptions.RayTaskError) and not _lost(ray, exc):
                        # The work itself raised (it records cell errors, so this is a bug or an
                        # interrupt on the worker): the rest of the group fails with the reason.
                        yield from self._missing(job, got, f"the Ray task failed: {one_line(exc)}")
                        continue
                    if lost + 1 > self.spec.max_retries:
                        yield from self._missing(job, got, f"the Ray worker was lost {lost + 1} times "
                                                           f"({one_line(exc)})")
                        continue
                    rest = tuple(c for c in job.cells if c.id not in got)
                    again = replace(job, cells=rest, finished={**job.finished, **got})
                    hooks.say(f"{job.model}/{job.task}: Ray worker lost; retrying {len(rest)} cells")
                    with self._cluster():
                        live[task.remote(work_ref, again)] = (job, got, lost + 1)
                    continue
                except Exception as exc:  # noqa: BLE001 — not a task's error: the connection itself
                    raise self._lost_cluster(exc) from None
                if rec.cell in got:  # never twice
                    continue
                got[rec.cell] = rec
                yield rec
        finally:
            for gen in live:
                try:
                    ray.cancel(gen, force=True)
                except Exception:  # noqa: BLE001,S110 — best effort on the way out
                    pass

    def _check_head(self) -> None:
        """``ExecutorLost`` once the cluster's head (its GCS port) has refused connections for
        ``LOST_AFTER_S``: Ray itself would end this process a minute later, without a word."""
        address = self._gcs_address
        if not address or ":" not in address:
            return  # ray:// client connections raise ConnectionError themselves
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=HEALTH_CHECK_S).close()
        except OSError as exc:
            since = self._unreachable_since = self._unreachable_since or time.monotonic()
            if time.monotonic() - since >= LOST_AFTER_S:
                raise self._lost_cluster(f"its head {address} has been unreachable for "
                                         f"{LOST_AFTER_S:g} s ({exc.strerror or exc})") from None
            return
        self._unreachable_since = None

    @contextlib.contextmanager
    def _cluster(self):
        """Calls that talk to the cluster: any error there (not a task's) is ``ExecutorLost``."""
        try:
            yield
        except (KeyboardInterrupt, GeneratorExit, ExecutorLost):
            raise
        except Exception as exc:  # noqa: BLE001 — ConnectionError, RaySystemError, grpc errors alike
            raise self._lost_cluster(exc) from None

    def _lost_cluster(self, exc: BaseException | str) -> ExecutorLost:
        where = self.address or "the local Ray instance"
        why = exc if isinstance(exc, str) else one_line(exc)
        return ExecutorLost(f"--executor ray: lost the connection to {where}: {why}")

    def _missing(self, job: GroupJob, got: dict[str, Record], why: str) -> Iterator[Record]:
        """Failed records for the cells of ``job`` that never arrived."""
        from qdqbench.run.group import record

        for c in job.cells:
            if c.id not in got:
                yield record(self._suite, c, status="failed", error=f"{job.model}/{job.task}: {why}")


def _lost(ray, exc) -> bool:
    """True when the error is a lost worker or node (retry), not an exception the work raised."""
    lost = tuple(getattr(ray.exceptions, n) for n in ("WorkerCrashedError", "NodeDiedError",
                                                       "LocalRayletDiedError", "ObjectLostError")
                 if hasattr(ray.exceptions, n))
    if isinstance(exc, lost):
        return True
    cause = getattr(exc, "cause", None)
    return isinstance(cause, lost)

