"""The one place latency is measured and summarised.

``measure`` times a callable in-process the way nanoGPT's bench.py and trtexec do: warm up until
both a minimum time and a minimum iteration count have passed, then run until both ``min_iters``
and ``min_duration_s`` are reached (capped by ``max_iters`` / ``max_duration_s``), taking one
``time.perf_counter_ns`` pair per iteration and keeping every raw sample. ``measure_cuda`` does the
same with CUDA events around GPU work (device time, not host time). ``LatencyStats`` turns the
samples into percentiles, spread and throughput; throughput comes from the wall time of the timed
loop, not from the mean latency, so per-iteration gaps are charged honestly.

``measure_in_subprocess`` runs one engine in a fresh Python process (``qdqbench.engines.worker``):
two engines in one process interfere (a second runtime's thread pool slowed onnxruntime by about
40% on a 2-core CPU), so every latency figure the runner reports comes from its own process.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import BackendError

# Environment variables that size the thread pools of OpenMP, MKL, OpenBLAS and the TBB-based
# runtimes; pinned in the worker so an engine cannot use more cores than the cell asked for.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TBB_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class TimingSettings:
    """How long to warm up and how many iterations / seconds to time."""

    warmup_s: float = 1.0
    warmup_iters: int = 10
    min_iters: int = 50
    min_duration_s: float = 3.0
    max_iters: int = 100000
    max_duration_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_iters < 1 or self.min_iters < 1:
            raise ValueError("TimingSettings: min_iters and max_iters must be >= 1")
        if min(self.warmup_s, self.min_duration_s, self.max_duration_s) < 0 or self.warmup_iters < 0:
            raise ValueError("TimingSettings: durations and warmup_iters must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimingSettings:
        """Inverse of ``to_dict``; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"TimingSettings: unknown keys {sorted(unknown)}")
        return cls(**data)


@dataclass
class LatencyStats:
    """Raw per-iteration latencies of one timed loop and the summaries derived from them."""

    samples_ms: list[float]
    wall_s: float  # wall time of the whole timed loop (first start to last stop)
    batch: int
    seq: int
    warmup_iters: int
    method: str  # how the samples were taken, written next to the number
    # Secondary figures a method measures besides the samples (e.g. host latency, H2D/D2H of a GPU
    # engine); kept in the JSON, not turned into metrics.
    extra: dict[str, float] = field(default_factory=dict)

    def _arr(self) -> np.ndarray:
        if not self.samples_ms:
            raise ValueError("LatencyStats has no samples")
        return np.asarray(self.samples_ms, dtype=np.float64)

    @property
    def n(self) -> int:
        """Number of timed iterations."""
        return len(self.samples_ms)

    @property
    def mean(self) -> float:
        """Mean latency in ms."""
        return float(self._arr().mean())

    @property
    def std(self) -> float:
        """Population standard deviation of the latency in ms."""
        return float(self._arr().std())

    @property
    def min(self) -> float:
        """Fastest iteration in ms."""
        return float(self._arr().min())

    @property
    def max(self) -> float:
        """Slowest iteration in ms."""
        return float(self._arr().max())

    @property
    def median(self) -> float:
        """Median latency in ms."""
        return self.percentile(50)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in ms, linear interpolation as numpy's default."""
        return float(np.percentile(self._arr(), q))

    @property
    def cov(self) -> float:
        """Coefficient of variation, std / mean."""
        mean = self.mean
        return self.std / mean if mean > 0 else math.nan

    @property
    def throughput(self) -> float:
        """Sequences per second over the wall time of the timed loop."""
        return self.batch * self.n / self.wall_s if self.wall_s > 0 else math.nan

    def to_metrics(self) -> list:
        """The summary as result-record metrics (latencies in ms, lower is better)."""
        from qdqbench.core.results import Metric

        def ms(name: str, value: float) -> Metric:
            return Metric(name=name, value=value, unit="ms", higher_is_better=False)

        return [
            ms("latency_mean_ms", self.mean),
            ms("latency_median_ms", self.median),
            ms("latency_p90_ms", self.percentile(90)),
            ms("latency_p95_ms", self.percentile(95)),
            ms("latency_p99_ms", self.percentile(99)),
            ms("latency_min_ms", self.min),
            ms("latency_max_ms", self.max),
            ms("latency_std_ms", self.std),
            Metric(name="cov", value=self.cov, unit="ratio", higher_is_better=False),
            Metric(name="throughput", value=self.throughput, unit="seq/s", higher_is_better=True),
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (raw samples included)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        """Inverse of ``to_dict``."""
        return cls(**data)


# A probe (start() / stop()) read right around the timed loop, warm-up excluded: the energy meter
# of the worker (engines.energy). A context variable, set by ``loop_probe`` and always reset.
_LOOP_PROBE: contextvars.ContextVar[Any] = contextvars.ContextVar("qdqbench_loop_probe", default=None)


@contextlib.contextmanager
def loop_probe(probe: Any):
    """Within this block, ``measure`` / ``measure_cuda`` call ``probe.start()`` right before the
    first timed iteration and ``probe.stop()`` right after the last."""
    token = _LOOP_PROBE.set(probe)
    try:
        yield probe
    finally:
        _LOOP_PROBE.reset(token)


def _warm_up(fn: Callable[[], object], settings: TimingSettings,
             sync: Callable[[], None] | None) -> int:
    """Run ``fn`` until both the warm-up time and count are reached (capped by max_duration_s)."""
    pc = time.perf_counter
    start = pc()
    cap = start + settings.max_duration_s
    n = 0
    while True:
        now = pc()
        if (n >= settings.warmup_iters and now - start >= settings.warmup_s) or (n and now >= cap):
            return n
        fn()
        if sync is not None:
            sync()
        n += 1


def measure(fn: Callable[[], object], settings: TimingSettings, *, batch: int, seq: int,
            sync: Callable[[], None] | None = None,
            method: str = "host perf_counter_ns per iteration") -> LatencyStats:
    """Warm up, then time ``fn`` per iteration with perf_counter_ns; ``sync`` runs inside each."""
    warm = _warm_up(fn, settings, sync)
    pc = time.perf_counter_ns
    # Preallocated so the loop body only calls fn, reads the clock and stores an int.
    samples = [0] * settings.max_iters
    min_iters, max_iters = settings.min_iters, settings.max_iters
    probe = _LOOP_PROBE.get()
    if probe is not None:
        probe.start()
    start = pc()
    min_end = start + int(settings.min_duration_s * 1e9)
    max_end = start + int(settings.max_duration_s * 1e9)
    i = 0
    stop = start
    while i < max_iters:
        t0 = pc()
        fn()
        if sync is not None:
            sync()
        stop = pc()
        samples[i] = stop - t0
        i += 1
        if stop >= max_end or (i >= min_iters and stop >= min_end):
            break
    if probe is not None:
        probe.stop()
    wall_s = (stop - start) / 1e9
    return LatencyStats(samples_ms=[s / 1e6 for s in samples[:i]], wall_s=wall_s, batch=batch,
                        seq=seq, warmup_iters=warm, method=method)


def measure_cuda(enqueue: Callable[[], object], settings: TimingSettings, *, batch: int, seq: int,
                 stream: Any, method: str = "CUDA events around each enqueue (GPU time)",
                 event_factory: Callable[[], Any] | None = None) -> LatencyStats:
    """Time GPU work with a start/stop CUDA event pair per iteration on ``stream``.

    ``enqueue`` launches one inference on ``stream`` without synchronising. Each iteration records
    a start event, enqueues, records a stop event and waits for it, so the host stays in lockstep
    with the device and the stopping rule (wall time) is meaningful; the samples are the device
    time between the events (``Event.elapsed_time``), the host-side latency per iteration goes to
    ``extra``. ``event_factory`` defaults to ``torch.cuda.Event(enable_timing=True)``.
    """
    if event_factory is None:
        import torch

        def event_factory() -> Any:
            return torch.cuda.Event(enable_timing=True)

    begin, end = event_factory(), event_factory()

    def one() -> None:
        enqueue()
        end.record(stream)
        end.synchronize()

    warm = _warm_up(one, settings, None)
    pc = time.perf_counter_ns
    gpu = [0.0] * settings.max_iters
    host = [0] * settings.max_iters
    min_iters, max_iters = settings.min_iters, settings.max_iters
    probe = _LOOP_PROBE.get()
    if probe is not None:
        probe.start()
    start = pc()
    min_end = start + int(settings.min_duration_s * 1e9)
    max_end = start + int(settings.max_duration_s * 1e9)
    i = 0
    stop = start
    while i < max_iters:
        t0 = pc()
        begin.record(stream)
        enqueue()
        end.record(stream)
        end.synchronize()
        stop = pc()
        # elapsed_time is read after the stop event completed, so it never blocks here.
        gpu[i] = begin.elapsed_time(end)
        host[i] = stop - t0
        i += 1
        if stop >= max_end or (i >= min_iters and stop >= min_end):
            break
    if probe is not None:  # each iteration waited for its stop event: the device is idle here
        probe.stop()
    host_ms = np.asarray(host[:i], dtype=np.float64) / 1e6
    return LatencyStats(samples_ms=[float(x) for x in gpu[:i]], wall_s=(stop - start) / 1e9,
                        batch=batch, seq=seq, warmup_iters=warm, method=method,
                        extra={"host_latency_mean_ms": float(host_ms.mean()),
                               "host_latency_median_ms": float(np.median(host_ms))})


def thread_env(threads: int | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment with every thread-pool size variable pinned to ``threads``."""
    env = dict(os.environ if base is None else base)
    if threads is not None:
        for var in THREAD_ENV_VARS:
            env[var] = str(threads)
    return env


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a worker's process group and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=30)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        pass


TIMING_LOCK_ENV = "QDQBENCH_TIMING_LOCK"


@contextlib.contextmanager
def timing_lock(path: str | os.PathLike | None = None):
    """Hold a node-wide exclusive lock (``flock`` on a node-local file) while a timed worker runs.

    The file is ``path``, else ``$QDQBENCH_TIMING_LOCK``; with neither, nothing is locked (a
    plain run times one cell at a time anyway). Executors that run several groups on one node
    at once (``--executor ray``) set the variable to a file in the node's own temp folder, so two
    timed cells never run on the same node at the same time. The kernel releases the lock
    when its holder dies.
    """
    where = path or os.environ.get(TIMING_LOCK_ENV)
    if not where:
        yield
        return
    import fcntl

    with open(where, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def measure_in_subprocess(backend: str, artifact: Path, precision: str, feeds_npz: Path,
                          settings: TimingSettings, *, threads: int | None,
                          timeout_s: float = 600, options: dict[str, Any] | None = None,
                          profile_iters: int = 0,
                          ) -> tuple[LatencyStats, dict[str, Any]]:
    """Time one engine in a fresh worker process; returns (stats, {"precision", "info",
    "resources", "op_profile"}).

    ``options`` are extra keyword arguments for the backend's ``prepare`` (JSON-serialisable, e.g.
    ``{"transformer_fusion": True}``). ``profile_iters`` > 0: after the timed loop the worker
    profiles that many extra inferences per op (``engines.profile``). A failing, crashing or
    hanging worker raises BackendError with one line; a failing profile does not.
    """
    artifact, feeds_npz = Path(artifact), Path(feeds_npz)
    with tempfile.TemporaryDirectory(prefix="qdqbench-worker-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "qdqbench.engines.worker", "--backend", backend,
               "--artifact", str(artifact), "--precision", precision, "--feeds", str(feeds_npz),
               "--settings", json.dumps(settings.to_dict()), "--out", str(out),
               "--parent-pid", str(os.getpid())]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        if options:
            cmd += ["--options", json.dumps(options)]
        if profile_iters:
            cmd += ["--profile-iters", str(int(profile_iters))]
        # Own session (process group) so a timeout kills the worker and any children it spawned;
        # the terminal's Ctrl-C reaches only this process, which then kills the group itself. A
        # worker whose parent dies (even by SIGKILL) is killed by the kernel (--parent-pid).
        with timing_lock():  # one timed worker at a time on this node when QDQBENCH_TIMING_LOCK is set
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=thread_env(threads), start_new_session=True)
            try:
                _, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise BackendError(f"{backend} worker timed out after {timeout_s:g} s on {artifact}") from None
            except BaseException:
                # SIGINT / SIGTERM / an error here: no worker outlives the cell that started it.
                _kill_group(proc)
                raise
        result = None
        if out.exists():
            try:
                result = json.loads(out.read_text(encoding="utf-8"))
            except ValueError:
                result = None
        if result is not None and "error" in result:
            raise BackendError(result["error"])
        if proc.returncode != 0 or result is None:
            why = _last_line(stderr) or f"exit status {proc.returncode}"
            raise BackendError(f"{backend} worker failed on {artifact}: {why}")
    stats = LatencyStats.from_dict(result["stats"])
    return stats, {"precision": result["precision"], "info": result["info"],
                   "resources": result.get("resources", {}), "op_profile": result.get("op_profile")}
