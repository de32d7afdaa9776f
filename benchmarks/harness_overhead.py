"""How much of a timed iteration is qdqbench's own timing loop, measured two ways.

Run by ``engine_speed.py`` in a fresh process (thread pools pinned like a timing worker):

1. **no-op loop**: ``qdqbench.engines.timing.measure`` around a callable that does nothing, with the same
   ``TimingSettings`` as the engine rows. Its samples are the in-sample cost of the loop (one
   ``perf_counter_ns`` read and one Python call), and its wall time per iteration is the whole
   per-iteration cost (the clock reads, the store, the stopping test) that the throughput figure
   is charged with. This is the harness overhead the < 2% target is about.
2. **host vs. ORT profiler**: the same ``run_with_iobinding`` loop the onnxruntime backend times,
   on a session built with the backend's settings plus ``enable_profiling``; each host sample is
   paired with ORT's own ``model_run`` event of that run. The gap is everything outside ORT's
   run: the harness, the Python binding call and the output allocation. Profiling adds per-node
   events inside ``model_run`` (so both figures are a little slower than a plain row), but not to
   the gap.

Prints one JSON object (or writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def noop_overhead(settings: Any) -> dict[str, float]:
    """Per-iteration cost of ``measure`` around a no-op: in-sample and whole-loop, in ns."""
    from qdqbench.engines.timing import measure

    stats = measure(lambda: None, settings, batch=1, seq=1, method="no-op")
    samples_ns = np.asarray(stats.samples_ms) * 1e6
    return {
        "iterations": stats.n,
        "sample_median_ns": float(np.median(samples_ns)),
        "sample_mean_ns": float(samples_ns.mean()),
        "sample_p99_ns": float(np.percentile(samples_ns, 99)),
        "loop_ns_per_iteration": stats.wall_s * 1e9 / stats.n,
    }


def _model_run_durations_ms(profile: Path) -> list[float]:
    """Durations of ORT's per-run ``model_run`` events, in run order."""
    events = json.loads(profile.read_text(encoding="utf-8"))
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs.sort(key=lambda e: e.get("ts", 0))
    return [e["dur"] / 1e3 for e in runs]


def profiler_gap(model: Path, feeds_npz: Path, threads: int, iters: int, warmup: int) -> dict[str, Any]:
    """Host latency around run_with_iobinding vs. ORT's model_run, paired per run."""
    import time

    import onnxruntime as ort

    with np.load(feeds_npz) as npz:
        feeds = {name: np.ascontiguousarray(npz[name]) for name in npz.files}
    with tempfile.TemporaryDirectory(prefix="qdqbench-profile-") as tmp:
        so = ort.SessionOptions()
        # The onnxruntime backend's settings (qdqbench.engines.onnxruntime.prepare).
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        binding = sess.io_binding()
        for inp in sess.get_inputs():
            binding.bind_cpu_input(inp.name, feeds[inp.name])
        binding.bind_output(sess.get_outputs()[0].name, "cpu")
        run = sess.run_with_iobinding
        for _ in range(warmup):
            run(binding)
        pc = time.perf_counter_ns
        host = [0] * iters
        # The same loop body as qdqbench.engines.timing.measure: clock, call, clock, store.
        for i in range(iters):
            t0 = pc()
            run(binding)
            host[i] = pc() - t0
        profile = Path(sess.end_profiling())
        runs = _model_run_durations_ms(profile)
    if len(runs) < iters:
        raise RuntimeError(f"ORT profile has {len(runs)} model_run events for {iters} timed runs")
    ort_ms = np.asarray(runs[-iters:])
    host_ms = np.asarray(host, dtype=np.float64) / 1e6
    gap = host_ms - ort_ms
    return {
        "iterations": iters,
        "host_mean_ms": float(host_ms.mean()),
        "ort_model_run_mean_ms": float(ort_ms.mean()),
        "gap_mean_ms": float(gap.mean()),
        "gap_median_ms": float(np.median(gap)),
        "gap_pct_of_host": float(100.0 * gap.mean() / host_ms.mean()),
        "note": "profiling on: per-node events slow both figures; the gap is outside ORT's run",
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python benchmarks/harness_overhead.py --settings JSON [--model M --feeds F]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", required=True, help="TimingSettings as JSON (for the no-op loop)")
    p.add_argument("--model", type=Path, help="ONNX model for the host-vs-profiler comparison")
    p.add_argument("--feeds", type=Path, help=".npz of the model's inputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iters", type=int, default=50, help="profiled runs")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled-in-the-result warm-up runs")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from qdqbench.engines.timing import TimingSettings

    result: dict[str, Any] = {"noop": noop_overhead(TimingSettings.from_dict(json.loads(args.settings)))}
    if args.model is not None:
        try:
            result["profiler"] = profiler_gap(args.model, args.feeds, args.threads, args.iters, args.warmup)
        except Exception as exc:  # reported, not fatal: the no-op figure is the target's number
            result["profiler"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
