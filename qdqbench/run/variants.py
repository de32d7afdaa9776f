"""A scheme's torch model: the fp32 model itself, or a calibrated QDQBERT copy of it.

Calibration is ``quant.build.build_variant`` (the one calibration sequence) on the scheme's
seeded sample of the task's calibration pool; then QAT when the scheme asks for it, or the whole
``recipe: auto`` search (calibrators → partial → QAT, chosen on the selection part of the
evaluation set, or on a held-out train slice).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.config.suite import QATSpec, SchemeSpec
from qdqbench.core.errors import QdqbenchError
from qdqbench.core.files import save_atomic, write_json_atomic
from qdqbench.core.memory import NOT_AVAILABLE, peak_rss_mb
from qdqbench.run.context import GroupContext, Variant, baseline_outputs, engine_session, threads, timing_settings


def calibration_spec(scheme: SchemeSpec):
    """The scheme's calibration settings (a peer recipe states its own in ``peer``)."""
    if not scheme.is_peer:
        return scheme.calibration
    from qdqbench.config.suite import CalibrationSpec
    from qdqbench.quant.peer_settings import calibration_plan

    plan = calibration_plan(scheme.kind, scheme.peer)
    if plan is None:
        return CalibrationSpec(samples=1)
    samples, batch_size, seed = plan
    return CalibrationSpec(samples=samples, batch_size=batch_size, seed=seed)


def calibration_batches(ctx: GroupContext, scheme: SchemeSpec):
    """(samples, batches): the scheme's calibration sample (reproducible by its seed), batched."""
    cal = calibration_spec(scheme)
    pool = ctx.data.calibration
    idx = sorted(np.random.default_rng(cal.seed).choice(pool.size, size=min(cal.samples, pool.size), replace=False))
    return len(idx), pool.take([int(i) for i in idx]).batches(cal.batch_size)


def qdq_settings(scheme: SchemeSpec):
    """The QDQBERT settings of a Q/DQ scheme."""
    from qdqbench.quant.qdqbert import QDQSettings

    return QDQSettings(
        bits=scheme.bits, groups=tuple(scheme.groups), per_channel_weights=scheme.weights == "per-channel",
        calib_method=scheme.calibration.method, num_bins=scheme.calibration.num_bins, skip=tuple(scheme.skip),
        clip_gelu=scheme.clip_gelu, fuse_qkv=scheme.fuse_qkv, weight_bits=scheme.weight_bits,
        quantize_embeddings=scheme.quantize_embeddings,
    )


def build(ctx: GroupContext, sname: str) -> Variant:
    """The fp32 model itself, or a calibrated QDQBERT copy of it (amaxes saved as an artifact)."""
    from qdqbench.quant.build import build_variant
    from qdqbench.quant.qdqbert import count_quantizers
    from qdqbench.quant.quantizer import quantizers
    from qdqbench.tasks.evaluate import torch_forward

    data, scheme = ctx.data, ctx.scheme(sname)
    if scheme.kind == "fp32" or scheme.is_peer:
        # A peer recipe starts from the fp32 model; its own tool quantizes the export.
        return Variant(data.model, {})
    settings = qdq_settings(scheme)
    artifacts = ctx.artifacts(sname)
    t0 = time.perf_counter()
    rss0 = peak_rss_mb()
    n, batches = calibration_batches(ctx, scheme)
    info: dict[str, Any] = {}
    if scheme.recipe == "auto":
        model, info["recipe"] = auto_recipe(ctx, sname, settings, batches, artifacts)
    else:
        model, changes = build_variant(
            data.model, settings, lambda m: [torch_forward(m, data.output)(f) for _, f in batches],
            scheme.calibration.method, percentile=scheme.calibration.percentile)
        if changes:
            info["post_calibration"] = changes
        if scheme.qat is not None:
            info["qat"] = qat(ctx, scheme.qat, model, artifacts / "qat")
    amaxes = {name: float(q.amax.max()) for name, q in quantizers(model) if q.mode != "disabled"}
    # The calibrated ranges are an artifact: reviewers compare them across runs and calibrators.
    write_json_atomic(artifacts / "amax.json", amaxes)
    calibration: dict[str, Any] = {"method": scheme.calibration.method, "samples": n,
                                   "seconds": round(time.perf_counter() - t0, 3), **data.notes}
    rss1 = peak_rss_mb()
    if rss0 is None or rss1 is None:
        calibration["peak_rss_note"] = f"{NOT_AVAILABLE}: no peak resident memory offered"
    else:
        # The run process's peak so far: when an earlier step peaked higher than calibration did,
        # the growth is 0 and understates it, so it is a lower bound.
        calibration["peak_rss_mb"] = round(rss1 - rss0, 2)
        calibration["process_peak_rss_mb"] = round(rss1, 2)
        calibration["peak_rss_method"] = ("growth of the process's peak resident memory over the "
                                          "calibration (a lifetime peak, so a lower bound when an "
                                          "earlier step peaked higher)")
    info = {
        "calibration": calibration,
        "quantizers": count_quantizers(model),
        "amax": ctx.paths.rel(artifacts / "amax.json"),
        **info,
    }
    return Variant(model, info, amaxes)


def evaluation_split(ctx: GroupContext, sname: str):
    """The selection/test split of the evaluation set for scheme ``sname``, or None.

    Only a ``recipe: auto`` scheme with ``selection.source: dev-split`` has one: it chooses on the
    selection part and its verdict is taken on the test part. The split is a stable hash of each
    example's text and the suite's seed (``tasks.split``); a part under 100 examples is an error
    naming the task.
    """
    from qdqbench.config.suite import dev_split_selection
    from qdqbench.core.errors import TaskError
    from qdqbench.tasks.split import check_parts, split_examples

    spec = dev_split_selection(ctx.scheme(sname))
    if spec is None:
        return None
    keys = ctx.data.eval_keys
    if keys is None:
        raise TaskError(f"task '{ctx.task_key}' cannot split its evaluation set for recipe: auto; "
                        "use auto.selection: {source: train}")
    return check_parts(ctx.task_key, split_examples(keys, spec.fraction, ctx.suite.seed))


def train_data(ctx: GroupContext, limit: int | None, seed: int, exclude: int = 0):
    """(encoded, labels) of the training split, shuffled by seed, skipping the first ``exclude``."""
    if ctx.data.training is None:
        raise QdqbenchError("QAT and recipe: auto need a task with a labelled training split (GLUE, or SQuAD "
                            "with its train file)")
    return ctx.data.training.sample(limit, seed, exclude)


def qat_plan(ctx: GroupContext, spec):
    """The QAT schedule: given, or derived from the original fine-tuning (finetune.json)."""
    from qdqbench.quant.qat import QATError, QATPlan

    original = spec.original
    ft = ctx.resolved.path / "finetune.json"
    if original is None and ft.is_file():
        original = json.loads(ft.read_text(encoding="utf-8"))
    if original is not None:
        plan = QATPlan.from_finetune(original, fraction=spec.fraction, lr_fraction=spec.lr_fraction,
                                     warmup=spec.warmup)
        return QATPlan(steps=spec.steps or plan.steps, lr=spec.lr or plan.lr, warmup=spec.warmup,
                       schedule="cosine", batch_size=spec.batch_size or plan.batch_size, source=plan.source)
    if spec.steps is None or spec.lr is None:
        raise QATError(f"QAT needs steps and lr, or the original schedule (finetune.json beside "
                       f"{ctx.resolved.path} or qat.original)")
    return QATPlan(steps=spec.steps, lr=spec.lr, warmup=spec.warmup, schedule="cosine",
                   batch_size=spec.batch_size or 32, source={"given": True})


def qat(ctx: GroupContext, spec, model, checkpoint_dir: Path) -> dict[str, Any]:
    """Fine-tune ``model`` in place with fake quantization; checkpoints make it resumable."""
    from qdqbench.quant.qat import LOSSES, finetune, train_batches

    plan = qat_plan(ctx, spec)
    seed = ctx.suite.seed
    encoded, labels = train_data(ctx, spec.max_train_examples, seed)
    training = ctx.data.training
    batches = train_batches(encoded, labels, plan.batch_size, label_perm=training.label_perm)
    every = spec.checkpoint_every or max(1, plan.steps // 5)

    def progress(step) -> None:
        if step.step == 1 or step.step % every == 0 or step.step == step.steps:
            ctx.say(f"  QAT step {step.step}/{step.steps} loss {step.loss:.4f}")

    result = finetune(model, batches, steps=plan.steps, lr=plan.lr, warmup=plan.warmup, schedule=plan.schedule,
                      seed=seed, loss_fn=LOSSES[training.loss],
                      checkpoint_dir=checkpoint_dir, checkpoint_every=every, progress=progress)
    model.eval()
    return {"plan": plan.to_dict(), **result.to_dict()}


def selection_data(ctx: GroupContext, sname: str):
    """(inputs, scorer, evaluation rows or None, description) of the data ``recipe: auto`` chooses on.

    ``dev-split``: the selection part of the evaluation set (``evaluation_split``; the verdict is
    taken on the test part). ``train``: examples held out of the training split.
    """
    auto = ctx.scheme(sname).auto
    split = evaluation_split(ctx, sname)
    if split is not None:
        inputs, scorer, rows = ctx.data.eval_part(split.selection)
        return inputs, scorer, rows, {
            "source": "dev-split", **split.describe(),
            "description": (f"{len(split.selection)} of {len(split.selection) + len(split.test)} evaluation examples "
                            f"(stable hash split, fraction {split.fraction:g}, seed {split.seed}); the verdict is "
                            f"taken on the other {len(split.test)}, which auto never saw")}
    inputs, labels = train_data(ctx, auto.selection.examples, ctx.suite.seed)
    return inputs, ctx.data.training.scorer(labels), None, {
        "source": "train", "selection_examples": int(len(labels)),
        "description": f"{len(labels)} held-out training examples (the dev set only scores the choice)"}


def auto_recipe(ctx: GroupContext, sname: str, settings, batches, artifacts: Path):
    """``recipe: auto``: calibrators → partial → QAT, chosen on the scheme's selection data."""
    from qdqbench.core.stats import paired_bootstrap_delta
    from qdqbench.quant.auto import Budget, Calibrations, CalibratorSpec, MeetsBound, logits_sqnr_proxy, outputs_fn
    from qdqbench.quant.auto import auto_recipe as search
    from qdqbench.tasks.evaluate import Encoded, run_batches, torch_forward

    scheme = ctx.scheme(sname)
    data, auto, bs, acc = ctx.data, scheme.auto, ctx.eval_batch_size, ctx.suite.accuracy
    selection, scorer, rows, where = selection_data(ctx, sname)
    metric = data.task.primary_metric
    # The trace's intervals are needed even where the suite's reports skip them (bootstrap: 0).
    resamples = acc.bootstrap or 1000

    if auto.score_on == "engine":
        target = target_engine(ctx.suite, auto)
        outputs = EngineOutputs(ctx, target, selection, artifacts / "auto")
        # The verdict's own baseline (fp32 torch over the whole evaluation set, computed once per
        # group and kept as an artifact) on the selection rows; on a train slice, fp32 torch there.
        base_out = (baseline_outputs(ctx)[rows] if rows is not None
                    else run_batches(selection, bs, torch_forward(data.model, data.output), reduce=data.reduce))
    else:
        def outputs(model):
            return run_batches(selection, bs, torch_forward(model, data.output), reduce=data.reduce)

        base_out = outputs(data.model)

    def predictions(model):
        return scorer.predictions(outputs(model))

    base_preds = scorer.predictions(base_out)
    fn, base_p, labels = scorer.bootstrap_inputs(base_preds, metric)

    def score(model):
        # The paired interval of the drop goes in the trace under either rule; only ci-upper
        # decides by it (under point it shows how far the point estimate can be trusted).
        preds = predictions(model)
        value = scorer.scores(preds)[metric]
        _, p, _ = scorer.bootstrap_inputs(preds, metric)
        _, low, high = paired_bootstrap_delta(fn, base_p, p, labels, n_resamples=resamples, seed=ctx.suite.seed)
        return value, (low, high)

    # The sensitivity proxy (logits SQNR) runs dozens of times: a 128-example slice is enough
    # to rank parts, and the bound itself is still checked on the whole selection data.
    k = min(128, len(selection.input_ids))
    proxy_set = Encoded(selection.input_ids[:k], selection.token_type_ids[:k], selection.pad_id)
    forward = outputs_fn(proxy_set, bs, data.output, data.reduce)
    meets = MeetsBound(metric, score, baseline=scorer.scores(base_preds)[metric],
                       bound=acc.bound * (1 - auto.headroom), mode=acc.mode, accept=auto.accept)
    calibrate = Calibrations(data.model, settings,
                             run_calibration=lambda m: [torch_forward(m, data.output)(f) for _, f in batches])
    qat_fn = None
    if auto.qat:
        spec = scheme.qat or QATSpec()
        qat_fn = lambda m: qat(ctx, spec, m, artifacts / "qat")  # noqa: E731
    result = search(
        calibrate, meets, calibrators=[CalibratorSpec.parse(c) for c in auto.calibrators],
        score_fn=logits_sqnr_proxy(forward(data.model), forward),
        latency_fn=candidate_latency(ctx, auto, artifacts), qat_fn=qat_fn,
        budget=Budget(max_evaluations=auto.max_evaluations, max_seconds=auto.max_minutes * 60),
        partial=auto.partial, progress=lambda msg: ctx.say(f"  auto: {msg}"), timing_rounds=auto.timing_rounds,
        granularity=auto.granularity, weight_bits=auto.weight_bits, group_calibrators=auto.group_calibrators,
        residual_by_speed=auto.residual == "measure",
    )
    info = result.to_dict()
    info["selection_split"] = where["description"]
    info["selection_data"] = where
    info["selection_bound"] = {"bound": meets.bound, "mode": meets.mode, "headroom": auto.headroom}
    info["scored_on"] = (
        {"where": "engine", "engine": outputs.engine, "precision": outputs.precision, "candidates": outputs.runs,
         "baseline": "fp32 torch (the verdict's baseline)"}
        if auto.score_on == "engine" else {"where": "torch", "precision": "fake-quant (fp32 arithmetic)"})
    info["accept"] = {"rule": auto.accept, "bootstrap_resamples": resamples,
                      "meaning": ("upper end of the paired 95% bootstrap interval of the drop on the selection "
                                  "data within the bound" if auto.accept == "ci-upper"
                                  else "the drop's point estimate within the bound")}
    return result.model, info


def target_engine(suite, auto) -> str | None:
    """The engine ``recipe: auto`` times (and scores on, with ``score_on: engine``): its
    ``target_backend``, else the suite's first engine; None for a torch-only suite."""
    engines = [b for b in suite.backends if b != "torch"]
    return auto.target_backend or (engines[0] if engines else None)


class EngineOutputs:
    """``recipe: auto``'s ``score_on: engine``: a candidate's outputs on ``inputs`` from the target
    engine itself — exported to ONNX, built with the engine's Q/DQ request (its INT8 path), run at
    the task's evaluation batch size, the export removed after. An engine that cannot take a
    candidate is a QdqbenchError naming the candidate and the engine (the auto cell fails with it).
    """

    def __init__(self, ctx: GroupContext, engine: str, inputs, folder: Path):
        self.ctx, self.engine, self.inputs, self.folder = ctx, engine, inputs, folder
        self.precision: str | None = None
        self.runs = 0

    def __call__(self, model) -> np.ndarray:
        import torch

        from qdqbench.engines import available_backend, engine_request
        from qdqbench.quant.export import export_onnx
        from qdqbench.tasks.evaluate import run_batches

        ctx, data = self.ctx, self.ctx.data
        self.runs += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"scored-{self.runs}.onnx"
        _, sample = data.eval_inputs.batches(2)[0]
        try:
            export_onnx(model, path, {k: torch.from_numpy(v) for k, v in sample.items()}, output=data.output)
            session = engine_session(ctx, available_backend(self.engine), path, engine_request(self.engine, "qdq"))
            self.precision = session.precision
            return run_batches(self.inputs, ctx.eval_batch_size, session.predict, reduce=data.reduce)
        except QdqbenchError as exc:
            raise QdqbenchError(f"recipe: auto candidate {self.runs} on {self.engine}: {exc}") from exc
        finally:
            path.unlink(missing_ok=True)


def candidate_latency(ctx: GroupContext, auto, artifacts: Path):
    """Export a candidate and time it on the target engine at the largest timed batch (or None).

    Returns the median latency in ms, timed with the suite's settings in a worker process.
    """
    suite, data = ctx.suite, ctx.data
    target = target_engine(suite, auto)
    if target is None:
        return None
    from qdqbench.engines import engine_request
    from qdqbench.engines.timing import measure_in_subprocess
    from qdqbench.quant.export import export_onnx
    from qdqbench.tasks.evaluate import timing_feeds

    options = dict(engine_request(target, "qdq").options)
    batch, seq = max(suite.shapes.batch), suite.shapes.seq[0]
    settings = timing_settings(suite)
    folder = artifacts / "auto"
    folder.mkdir(parents=True, exist_ok=True)
    feeds_path = folder / f"b{batch}s{seq}.npz"
    feeds = timing_feeds(data.tokenizer, data.texts, batch, seq)
    save_atomic(feeds_path, lambda fh: np.savez(fh, **feeds))
    counter = {"n": 0}

    def latency(model) -> float | None:
        import torch

        counter["n"] += 1
        path = folder / f"candidate-{counter['n']}.onnx"
        _, sample = data.eval_inputs.batches(2)[0]
        try:
            export_onnx(model, path, {k: torch.from_numpy(v) for k, v in sample.items()}, output=data.output)
            # The suite's own timing settings, and the median: a stall of the machine during
            # one short measurement must not decide between two candidates.
            stats, _ = measure_in_subprocess(target, path, "int8", feeds_path, settings,
                                             threads=threads(suite), options=options)
            return stats.median
        except QdqbenchError as exc:
            ctx.say(f"  auto: latency of candidate {counter['n']} unknown ({exc})")
            return None
        finally:
            path.unlink(missing_ok=True)

    return latency
