"""The steps a cell runs: accuracy and fidelity (torch or an engine), the ONNX export, latency.

Each step takes the group's context, the cell and the scheme's lazily built variant, and returns
the record's fields (metrics, verdict, precision, details[, status, error]); raising is a failed
cell (the group's error boundary records it). ``step_for`` picks a cell's step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.config.suite import Cell, SchemeSpec
from qdqbench.core.errors import QdqbenchError, one_line
from qdqbench.core.files import save_atomic
from qdqbench.core.results import Metric
from qdqbench.run.context import (
    CellFailure,
    GroupContext,
    Lazy,
    baseline_outputs,
    cell_of,
    engine_session,
    npz_readable,
    timing_settings,
    torch_outputs,
)

Step = Callable[[GroupContext, Cell, Lazy], dict[str, Any]]


# --------------------------------------------------------------------------- torch outputs and scores


def score(ctx: GroupContext, cell: Cell, outputs: np.ndarray, precision: str,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics with bootstrap intervals and, against fp32, the verdict with its paired interval.

    A ``recipe: auto`` scheme that chose on part of the evaluation set (``evaluation_split``) is
    judged on the other part: its metrics and verdict are the test part's, and
    ``details.evaluation_parts`` keeps the selection part's and the full set's beside them.
    """
    from qdqbench.run.variants import evaluation_split

    data = ctx.data
    needs_verdict = ctx.scheme(cell.scheme).kind != "fp32" or cell.backend != "torch"
    base = baseline_outputs(ctx) if needs_verdict else None
    split = evaluation_split(ctx, cell.scheme)
    metrics, verdict, details = _scored(ctx, data.scorer, outputs, base)
    if split is not None:
        parts: dict[str, Any] = {"verdict_on": "test", "split": split.describe(),
                                 "full": _part_summary(PART_CONTENTS["full"], metrics, verdict, details)}
        for name, idx in (("selection", split.selection), ("test", split.test)):
            p_metrics, p_verdict, p_details = _scored_part(ctx, outputs, base, idx)
            parts[name] = _part_summary(PART_CONTENTS[name], p_metrics, p_verdict, p_details)
            if name == "test":
                metrics, verdict, details = p_metrics, p_verdict, p_details
        details["evaluation_parts"] = parts
        details["scored_on"] = f"test part: {len(split.test)} evaluation examples auto never chose on"
    else:
        compared = _auto_test_part(ctx)
        if compared is not None:
            auto_scheme, test = compared
            p_metrics, p_verdict, p_details = _scored_part(ctx, outputs, base, test)
            details["test_part"] = {
                **_part_summary(f"the test part of recipe: auto scheme '{auto_scheme}' (examples it never "
                                "saw): compare with its verdict; this scheme's verdict is the full set's",
                                p_metrics, p_verdict, p_details),
                "auto_scheme": auto_scheme}
    details.update(extra or {})
    return {"metrics": metrics, "verdict": verdict, "precision": precision, "details": details}


def _scored_part(ctx: GroupContext, outputs: np.ndarray, base: np.ndarray | None, indices):
    """``_scored`` on the evaluation examples ``indices`` only (fp32 on the same examples)."""
    scorer, rows = ctx.data.scorer.part(indices)
    return _scored(ctx, scorer, outputs[rows], None if base is None else base[rows])


def _auto_test_part(ctx: GroupContext) -> tuple[str, Any] | None:
    """(scheme, test indices) of the first ``recipe: auto`` scheme of the suite that splits this
    task's evaluation set, or None: every other scheme is scored on that test part too, so a
    reviewer compares auto's verdict with each alternative on the same examples."""
    from qdqbench.config.suite import dev_split_selection
    from qdqbench.run.variants import evaluation_split

    for sname, scheme in ctx.suite.schemes.items():
        if dev_split_selection(scheme) is not None:
            try:
                split = evaluation_split(ctx, sname)
            except QdqbenchError:  # the auto scheme's own cells fail with the reason; others don't
                return None
            return (sname, split.test) if split is not None else None
    return None


# What each part of a split evaluation set holds (the record and the report say it with the score).
PART_CONTENTS = {
    "test": "evaluation examples recipe: auto never saw: the verdict",
    "selection": "evaluation examples recipe: auto chose on (optimistic for the chosen variant)",
    "full": "the whole evaluation set, selection part included (optimistic)",
}


def _scored(ctx: GroupContext, scorer, outputs: np.ndarray, base_outputs: np.ndarray | None):
    """(metrics, verdict or None, details) of ``outputs`` under ``scorer``; the verdict against
    ``base_outputs`` (the fp32 outputs of the same examples) when given."""
    from qdqbench.core.stats import bootstrap_ci, paired_bootstrap_delta
    from qdqbench.core.verdict import make_verdict

    acc, seed, task = ctx.suite.accuracy, ctx.suite.seed, ctx.data.task
    preds = scorer.predictions(outputs)
    scores = scorer.scores(preds)
    metrics = []
    for spec in task.metrics:
        lo = hi = None
        if acc.bootstrap:
            fn, p, y = scorer.bootstrap_inputs(preds, spec.name)
            lo, hi = bootstrap_ci(fn, p, y, n_resamples=acc.bootstrap, seed=seed)
        metrics.append(Metric(name=spec.name, value=scores[spec.name], unit="ratio",
                              higher_is_better=spec.higher_is_better, ci_low=lo, ci_high=hi))
    details: dict[str, Any] = {"primary_metric": task.primary_metric, "examples": scorer.count(preds),
                               **ctx.data.notes}
    verdict = None
    if base_outputs is not None:
        base_preds = scorer.predictions(base_outputs)
        baseline = scorer.scores(base_preds)[task.primary_metric]
        drop_ci = None
        if acc.bootstrap:
            fn, base_p, y = scorer.bootstrap_inputs(base_preds, task.primary_metric)
            _, p, _ = scorer.bootstrap_inputs(preds, task.primary_metric)
            _, lo, hi = paired_bootstrap_delta(fn, base_p, p, y, n_resamples=acc.bootstrap, seed=seed)
            drop_ci = (lo, hi)
        details["changed"] = scorer.changed(base_preds, preds)
        verdict = make_verdict(task.primary_metric, baseline, scores[task.primary_metric],
                               acc.bound, acc.mode, drop_ci)
    return metrics, verdict, details


def _part_summary(contains: str, metrics: list[Metric], verdict, details: dict[str, Any]) -> dict[str, Any]:
    """One part's primary score, interval and verdict numbers, for ``details.evaluation_parts``."""
    primary = next(m for m in metrics if m.name == details["primary_metric"])
    out: dict[str, Any] = {"contains": contains, "examples": details["examples"], "value": primary.value,
                           "ci_low": primary.ci_low, "ci_high": primary.ci_high}
    if verdict is not None:
        out.update(baseline=verdict.baseline, drop=verdict.drop, drop_ci_low=verdict.drop_ci_low,
                   drop_ci_high=verdict.drop_ci_high, passed=verdict.passed)
    return out


# --------------------------------------------------------------------------- torch cells


def accuracy_torch(ctx: GroupContext, cell: Cell, variant: Lazy) -> dict[str, Any]:
    """Scores of the fp32 model or the fake-quant variant, in torch."""
    t0 = time.perf_counter()
    out = torch_outputs(ctx, cell.scheme, variant)
    kind = ctx.scheme(cell.scheme).kind
    return score(ctx, cell, out, "fp32" if kind == "fp32" else "int8-fakequant",
                 {"eval_s": round(time.perf_counter() - t0, 3), **variant.get().info})


def fidelity_torch(ctx: GroupContext, cell: Cell, variant: Lazy) -> dict[str, Any]:
    """The fake-quant variant's outputs against fp32 (embedding fidelity)."""
    from qdqbench.tasks.fidelity import fidelity_metrics

    out = torch_outputs(ctx, cell.scheme, variant)
    ref = baseline_outputs(ctx)
    return {"metrics": fidelity_metrics(ref, out), "precision": "int8-fakequant",
            "details": {"examples": int(len(out)), "reference": "fp32 torch", **variant.get().info}}


# --------------------------------------------------------------------------- export


def export(ctx: GroupContext, cell: Cell, variant: Lazy) -> dict[str, Any]:
    """The scheme's ONNX file (Q/DQ structure checked), or a peer tool's quantized fp32 export."""
    import torch

    from qdqbench.quant.export import check_qdq_structure, export_onnx

    scheme = ctx.scheme(cell.scheme)
    if scheme.is_peer:
        return export_peer(ctx, cell, scheme)
    _, feeds = ctx.data.eval_inputs.batches(2)[0]
    sample = {k: torch.from_numpy(v) for k, v in feeds.items()}
    info = export_onnx(variant.get().model, ctx.onnx(cell.scheme), sample, output=ctx.data.output)
    details: dict[str, Any] = {"path": ctx.paths.rel(info.path), "bytes": info.path.stat().st_size,
                               "sha256": info.sha256, "op_counts": info.op_counts}
    status, error = "ok", None
    if scheme.kind == "qdq":
        # The check knows which quantizers the scheme left in float (skip patterns, groups off).
        check = check_qdq_structure(info.path, scheme.groups, model=variant.get().model)
        details["structure"] = check.summary()
        if not check.ok:
            status, error = "failed", f"Q/DQ structure check: {check.problems[0]} ({len(check.problems)} problems)"
    metrics = [Metric(name="onnx_mb", value=round(info.size_mb, 3), unit="MB", higher_is_better=False),
               Metric(name="qdq_nodes", value=info.qdq_nodes, unit="nodes")]
    out = {"metrics": metrics, "details": details, "precision": "fp32" if scheme.kind == "fp32" else "int8",
           "status": status}
    if error:
        out["error"] = error
    return out


def export_peer(ctx: GroupContext, cell: Cell, scheme: SchemeSpec) -> dict[str, Any]:
    """Quantize the fp32 export with the peer's own tool (ONNX Runtime, ModelOpt)."""
    from qdqbench.quant.peer_builders import build_peer_onnx
    from qdqbench.quant.peer_settings import calibration_plan
    from qdqbench.run.variants import calibration_batches

    fp32 = engine_artifact(ctx, cell_of(cell, scheme=ctx.suite.baseline_scheme, backend="onnx", kind="export"))
    feeds = None
    if calibration_plan(scheme.kind, scheme.peer) is not None:
        _, batches = calibration_batches(ctx, scheme)
        feeds = (f for _, f in batches)
    target = ctx.onnx(cell.scheme)
    facts = build_peer_onnx(scheme.kind, scheme.peer, fp32, target, feeds,
                            torch_model=ctx.data.model, output=ctx.data.output)
    details = {"path": ctx.paths.rel(target), "bytes": target.stat().st_size, "sha256": facts.get("sha256"),
               "op_counts": facts.get("op_counts", {}), "peer": facts}
    metrics = [Metric(name="onnx_mb", value=round(facts.get("size_mb", 0.0), 3), unit="MB", higher_is_better=False),
               Metric(name="qdq_nodes", value=facts.get("qdq_nodes", 0), unit="nodes")]
    return {"metrics": metrics, "details": details, "precision": "int8"}


def engine_artifact(ctx: GroupContext, cell: Cell) -> Path:
    """The scheme's ONNX export, when its export cell finished ok; else CellFailure naming it."""
    path = ctx.onnx(cell.scheme)
    export_id = cell_of(cell, backend="onnx", kind="export").id
    rec = ctx.finished.get(export_id)
    if rec is None or rec.status != "ok" or not path.exists():
        raise CellFailure(f"needs the ONNX export of {cell.scheme}, which did not finish ({export_id})")
    return path


# --------------------------------------------------------------------------- engine cells


def _engine(name: str):
    """The cell's engine; its unavailability (``engines.available_backend``) fails the cell as a
    dependency failure, as it always has ("CellFailure: <name> unavailable: <why>")."""
    from qdqbench.engines import BackendUnavailable, available_backend

    try:
        return available_backend(name)
    except BackendUnavailable as exc:
        raise CellFailure(str(exc)) from None


def _request(ctx: GroupContext, cell: Cell):
    from qdqbench.engines import engine_request

    return engine_request(cell.backend, ctx.scheme(cell.scheme).kind)


def engine_outputs(ctx: GroupContext, cell: Cell) -> tuple[np.ndarray, Any]:
    """The engine's outputs on the evaluation set, and its session (precision, facts)."""
    from qdqbench.tasks.evaluate import run_batches

    session = engine_session(ctx, _engine(cell.backend), engine_artifact(ctx, cell), _request(ctx, cell))
    return run_batches(ctx.data.eval_inputs, ctx.eval_batch_size, session.predict, reduce=ctx.data.reduce), session


def accuracy_engine(ctx: GroupContext, cell: Cell, variant: Lazy) -> dict[str, Any]:
    """Scores on the engine itself, and (for our own exports) how far it is from its torch model."""
    t0 = time.perf_counter()
    out, session = engine_outputs(ctx, cell)
    extra: dict[str, Any] = {"eval_s": round(time.perf_counter() - t0, 3), "engine": session.info}
    if not ctx.scheme(cell.scheme).is_peer:
        # The engine against the torch model it was exported from: the export's fidelity.
        ref = torch_outputs(ctx, cell.scheme, variant)
        scorer = ctx.data.scorer
        extra["changed_vs_torch"] = scorer.changed(scorer.predictions(ref), scorer.predictions(out))
        extra["max_abs_diff_vs_torch"] = float(np.abs(out - ref).max())
    return score(ctx, cell, out, session.precision, extra)


def fidelity_engine(ctx: GroupContext, cell: Cell, variant: Lazy) -> dict[str, Any]:
    """The engine's outputs against fp32 torch (embedding fidelity)."""
    from qdqbench.tasks.fidelity import fidelity_metrics

    out, session = engine_outputs(ctx, cell)
    ref = baseline_outputs(ctx)
    return {"metrics": fidelity_metrics(ref, out), "precision": session.precision,
            "details": {"examples": int(len(out)), "reference": "fp32 torch", "engine": session.info}}


# --------------------------------------------------------------------------- latency


def latency(ctx: GroupContext, cell: Cell, variant: Lazy) -> dict[str, Any]:
    """Latency in a fresh worker process on real-text inputs of the cell's shape.

    An fp32 cell times every fp32 configuration its engine declares (ONNX Runtime: plain and
    transformer-fused) and reports the fastest, with each figure in ``details.fp32_configs``.
    """
    from qdqbench.engines.timing import measure_in_subprocess

    backend = _engine(cell.backend)
    suite, data = ctx.suite, ctx.data
    scheme = ctx.scheme(cell.scheme)
    artifact, precision, options = _timed_target(ctx, cell, variant)
    inputs = timing_inputs(ctx, cell)
    settings = timing_settings(suite)

    def measure(extra_options: dict[str, Any]):
        return measure_in_subprocess(cell.backend, artifact, precision, inputs, settings,
                                     threads=ctx.threads, options={**options, **extra_options} or None,
                                     profile_iters=suite.timing.profile_iters)

    configs = backend.fp32_configurations(getattr(data.model, "config", None)) \
        if scheme.kind == "fp32" and suite.timing.best_fp32 else []
    stats, engine = measure(configs[0].options if configs else {})
    extra: dict[str, Any] = {}
    if len(configs) > 1:
        stats, engine, extra = fastest_fp32(configs, stats, engine, measure)
    details = {"iterations": stats.n, "warmup_iters": stats.warmup_iters, "threads": ctx.threads,
               "method": stats.method, "wall_s": round(stats.wall_s, 3), "engine": engine.get("info", {}),
               "inputs": ctx.paths.describe(inputs),
               **extra, "samples_ms": [round(x, 4) for x in stats.samples_ms]}
    metrics, details["resources"] = resource_metrics(engine.get("resources") or {})
    details["op_profile"] = engine.get("op_profile") or not_available("the worker reported no profile")
    if suite.timing.floor:
        details["gemm_floor"] = gemm_floor_details(ctx, cell, artifact, precision, options, stats.mean)
    return {"metrics": stats.to_metrics() + metrics, "precision": engine.get("precision", ""),
            "details": details}


def gemm_floor_details(ctx: GroupContext, cell: Cell, artifact: Path, precision: str,
                       options: dict[str, Any], mean_ms: float) -> dict[str, Any]:
    """The engine's "GEMMs only" floor at the cell's shape and the cell's distance to it
    (``engines.floor``; timed once per engine × options × precision × GEMM shape per run). A floor
    that cannot be measured is a note; the latency cell stays."""
    from qdqbench.engines.floor import FLOOR_PRECISIONS, gemm_floor

    if cell.backend == "torch":
        return not_available("the GEMM floor is measured for ONNX engines (torch times no ONNX)")
    if precision not in FLOOR_PRECISIONS:
        return not_available(f"the GEMM floor is measured for fp32 and int8, not {precision}")
    try:
        out = gemm_floor(artifact, cell.backend, precision, cell.batch, cell.seq, timing_settings(ctx.suite),
                         threads=ctx.threads, options=options or None, cache_dir=ctx.paths.gemm_floor())
    except QdqbenchError as exc:
        return {"status": "failed", "error": one_line(exc)}
    return {"status": "ok", **out, "latency_mean_ms": round(mean_ms, 4),
            "ratio": round(mean_ms / out["floor_ms"], 3) if out["floor_ms"] > 0 else None}


def not_available(why: str) -> dict[str, Any]:
    """A ``details`` entry for a figure this engine or machine does not offer."""
    from qdqbench.engines.profile import not_available as na

    return na(why)


def resource_metrics(resources: dict[str, Any]) -> tuple[list[Metric], dict[str, Any]]:
    """(metrics, details.resources) from the worker's memory and load-time figures.

    Each of peak_rss_mb, model_rss_mb, load_s and peak_gpu_mem_mb (CUDA only) that the worker
    measured becomes a lower-is-better metric; one it could not measure keeps its note
    ("not available on this engine/machine: ...") in ``details.resources.notes``.
    """
    from qdqbench.core.memory import NOT_AVAILABLE
    from qdqbench.engines.resources import OPTIONAL_METRICS, RESOURCE_METRICS

    details = dict(resources)
    notes = dict(details.get("notes") or {})
    metrics = []
    for name, unit in RESOURCE_METRICS:
        value = details.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.append(Metric(name=name, value=float(value), unit=unit, higher_is_better=False))
        elif name not in OPTIONAL_METRICS and name not in notes:
            notes[name] = f"{NOT_AVAILABLE}: the worker did not report it"
    if notes:
        details["notes"] = notes
    return metrics, details


def _timed_target(ctx: GroupContext, cell: Cell, variant: Lazy) -> tuple[Path, str, dict[str, Any]]:
    """(artifact, precision, prepare options) a latency cell times: the saved torch module, or the
    scheme's ONNX export with what ``engine_request`` asks of the engine."""
    if cell.backend == "torch":
        spec = ctx.suite.timing.torch
        precision = spec.float_precision if ctx.scheme(cell.scheme).kind == "fp32" else "int8"
        return torch_artifact(ctx, cell, variant), precision, {"device": spec.device, "cuda_graph": spec.cuda_graph}
    artifact = engine_artifact(ctx, cell)
    request = _request(ctx, cell)
    return artifact, request.precision, dict(request.options)


def timing_inputs(ctx: GroupContext, cell: Cell) -> Path:
    """Real-text feeds of the cell's shape, written once per model × task × shape (rebuilt when damaged)."""
    from qdqbench.tasks.evaluate import timing_feeds

    inputs = ctx.paths.timing_inputs(cell.model, cell.task, cell.batch, cell.seq)
    if not npz_readable(inputs):
        inputs.parent.mkdir(parents=True, exist_ok=True)
        feeds = timing_feeds(ctx.data.tokenizer, ctx.data.texts, cell.batch, cell.seq)
        save_atomic(inputs, lambda fh: np.savez(fh, **feeds))
    return inputs


def fastest_fp32(configs, first_stats, first_engine, measure):
    """Time the other fp32 configurations; the fastest (by mean; the first on a tie) is the
    baseline. A configuration that fails is recorded with its error and left out."""
    def summary(stats, engine, config) -> dict[str, Any]:
        info = engine.get("info", {})
        res = engine.get("resources") or {}
        return {"mean_ms": round(stats.mean, 4), "p99_ms": round(stats.percentile(99), 4),
                **{k: res[k] for k in ("load_s", "peak_rss_mb") if k in res},
                **{key: info.get(source, {}) for key, source in config.facts}}

    best = (first_stats, first_engine, configs[0].name)
    figures = {configs[0].name: summary(first_stats, first_engine, configs[0])}
    for config in configs[1:]:
        try:
            stats, engine = measure(config.options)
        except QdqbenchError as exc:
            figures[config.name] = {"error": one_line(exc)}
            continue
        figures[config.name] = summary(stats, engine, config)
        if stats.mean < best[0].mean:
            best = (stats, engine, config.name)
    return best[0], best[1], {"fp32_configs": figures, "fp32_baseline": best[2]}


def torch_artifact(ctx: GroupContext, cell: Cell, variant: Lazy) -> Path:
    """The scheme's torch model saved for the worker process (once per scheme, removed after)."""
    from qdqbench.engines.torch import save_torch_artifact

    path = ctx.paths.torch_model(cell.model, cell.task, cell.scheme)
    if not path.exists():
        save_torch_artifact(variant.get().model, path, output=ctx.data.output)
    return path


# --------------------------------------------------------------------------- dispatch

_BY_BACKEND_AND_KIND: dict[tuple[str, str], Step] = {
    ("torch", "accuracy"): accuracy_torch,
    ("torch", "fidelity"): fidelity_torch,
    ("onnx", "export"): export,
}
_BY_KIND: dict[str, Step] = {"accuracy": accuracy_engine, "fidelity": fidelity_engine, "latency": latency}


def step_for(cell: Cell) -> Step:
    """The step a cell runs: torch's own accuracy/fidelity, the export, or an engine's step."""
    return _BY_BACKEND_AND_KIND.get((cell.backend, cell.kind)) or _BY_KIND[cell.kind]
