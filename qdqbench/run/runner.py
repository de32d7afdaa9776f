"""Walk the cells of a suite: baseline, build variant, calibrate, evaluate, export, time.

Work is grouped per model × task (one model load, one tokenization) and per scheme (one QDQBERT
variant, calibrated once). Each cell runs inside its own error boundary: a cell that raises is
recorded as failed with a one-line error and the run goes on; cells that need its output fail
with a message naming it. Every finished cell is appended to ``results.jsonl`` at once, so an
interrupted run resumes (``--resume``) without recomputing or losing anything. Latency is
measured in a fresh process per cell (``timing.measure_in_subprocess``).
"""

from __future__ import annotations

import copy
import json
import os
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qdqbench.core.errors import QdqbenchError, one_line
from qdqbench.core.results import (Metric, Record, ResultStore, ResultStoreError, Shape, load_run_info, read_json_file,
                              write_json_atomic, write_text_atomic)
from qdqbench.config.suite import Cell, QATSpec, SchemeSpec, Suite, expand

RUN_JSON = "run.json"
SUITE_JSON = "suite.json"
RESULTS = "results.jsonl"


def now() -> str:
    """UTC timestamp, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class CellFailure(Exception):
    """A dependency of a cell failed; the message says which."""


class _StoreStopped(Exception):
    """``results.jsonl`` could not take a record: the run stops (nothing further could be kept)."""


@dataclass
class RunSummary:
    """Counts of a finished (or interrupted) run."""

    run_dir: Path
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    reused: int = 0
    interrupted: bool = False
    signal: int = 2  # the signal that interrupted the run (SIGINT 2, SIGTERM 15, SIGHUP 1)
    stopped: str | None = None  # why the run stopped early: results.jsonl could not be written
    notes: list[str] = field(default_factory=list)  # repairs and re-runs done before the first cell
    records: list[Record] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 all cells ok, 3 some cell failed, 2 the store stopped the run, 128+N interrupted by signal N."""
        if self.interrupted:
            return 128 + self.signal
        if self.stopped:
            return 2
        return 3 if self.failed else 0


def new_run_dir(suite: Suite, base: Path | None = None, shard: tuple[int, int] | None = None) -> Path:
    """Create ``<output.dir>/<suite>-<UTC time>[-shardKofN][-n]`` exclusively and return it.

    ``mkdir`` without ``exist_ok``: two runs started in the same second get two folders.
    """
    from qdqbench.core.runlock import create_run_dir

    root = Path(base or suite.output.dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # Shards start in the same second on different machines: the shard is part of the name.
    suffix = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return create_run_dir(root, f"{suite.name}-{stamp}{suffix}")


def load_run_suite(run_dir: Path) -> Suite:
    """The suite a run folder was started with (for --resume); one line when it is damaged."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise QdqbenchError(f"{run_dir}: run folder not found")
    p = run_dir / SUITE_JSON
    if not p.is_file():
        raise QdqbenchError(f"{run_dir}: not a qdqbench run folder (no {SUITE_JSON})")
    data = read_json_file(p, SUITE_JSON)
    try:
        return Suite.model_validate(data)
    except ValueError as exc:
        errors = exc.errors() if hasattr(exc, "errors") else []
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ())) or "(top level)"
        raise QdqbenchError(f"{p}: {SUITE_JSON} is damaged ({where}: {first.get('msg', exc)}); "
                            "it cannot be resumed") from None


# --------------------------------------------------------------------------- per model × task


@dataclass
class TaskData:
    """A loaded model and the task's tokenized evaluation and calibration data."""

    resolved: Any
    model: Any  # the fp32 transformers model (never modified: variants are deep copies)
    tokenizer: Any
    task: Any  # GlueTask / SquadTask, or None for embedding fidelity
    output: str  # "logits", "qa_logits" (start/end stacked) or "last_hidden_state"
    eval_encoded: Any  # anything with .batches(batch_size), as evaluate.Encoded
    calib_pool: Any  # Encoded (fidelity) or examples to sample from per scheme
    scorer: Any  # scoring.GlueScorer / QAScorer; None for embedding fidelity
    reduce: Any  # per-batch output reduction for run_batches (pooling, padding) or None
    texts: list[str]  # real text for timing inputs
    max_length: int
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. a calibration-data deviation
    task_key: str = ""  # the suite's key of the task


class Runner:
    """Runs (or resumes) a suite into a run folder."""

    def __init__(self, suite: Suite, run_dir: Path, *, suite_path: Path | None = None,
                 console=None, show_progress: bool = True, cells: list[Cell] | None = None,
                 shard: tuple[int, int] | None = None, locked: bool = False):
        self.locked = locked  # the caller already holds the run folder's lock
        self.suite = suite
        self.cells = cells if cells is not None else expand(suite)
        self.shard = shard
        self.run_dir = Path(run_dir)
        self.suite_path = suite_path
        self.store = ResultStore(self.run_dir / RESULTS)
        self.console = console
        self.show_progress = show_progress
        self._outputs: dict[tuple[str, str, str, str], np.ndarray] = {}
        self._notes: list[str] = []  # repairs found at start: torn tail, damaged artifacts
        self._reruns: dict[str, str] = {}  # cell id -> why a finished cell runs again

    # ------------------------------------------------------------------ bookkeeping

    def _artifacts(self, cell: Cell) -> Path:
        p = self.run_dir / "artifacts" / cell.model / cell.task / cell.scheme
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _write_run_json(self, started: str, finished: str | None, state: str = "running") -> None:
        from qdqbench.core.env import environment

        info = {
            "run_id": self.run_dir.name,
            "suite": {"name": self.suite.name, "path": str(self.suite_path) if self.suite_path else None,
                      "description": self.suite.description},
            "started_at": started,
            "finished_at": finished,
            # running | finished | interrupted | stopped: a folder whose state is not "finished"
            # is incomplete (merge refuses it without --partial).
            "state": state,
            "accuracy_bound": {"bound": self.suite.accuracy.bound, "mode": self.suite.accuracy.mode},
            "timing": self.suite.timing.model_dump() | {"threads_used": self._threads()},
            "shard": {"index": self.shard[0], "count": self.shard[1]} if self.shard else None,
            "cells": len(self.cells),
            **environment(),
        }
        if (self.run_dir / RUN_JSON).exists():
            try:
                old = load_run_info(self.run_dir)
            except QdqbenchError as exc:
                old = {}
                self._note(f"{exc}; rewritten")
            if old:
                info["started_at"] = old.get("started_at", started)
                info["resumed_at"] = sorted(set(old.get("resumed_at", []) + [started]))
            if old.get("repairs") or self._notes:
                info["repairs"] = list(old.get("repairs", [])) + [f"{started}: {n}" for n in self._notes
                                                                 if f"{started}: {n}" not in old.get("repairs", [])]
        write_json_atomic(self.run_dir / RUN_JSON, info)

    def _timing_settings(self):
        """The suite's timing section as ``TimingSettings`` (latency cells and auto's candidates)."""
        from qdqbench.engines.timing import TimingSettings

        t = self.suite.timing
        return TimingSettings(warmup_s=t.warmup_s, warmup_iters=t.warmup_iters, min_iters=t.min_iters,
                              min_duration_s=t.min_duration_s, max_duration_s=t.max_duration_s)

    def _threads(self) -> int:
        return self.suite.timing.threads or os.cpu_count() or 1

    def _say(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg)

    def _note(self, msg: str) -> None:
        self._notes.append(msg)
        if self.console is not None:
            self.console.print(f"[yellow]note[/yellow]: {msg}", highlight=False)

    # ------------------------------------------------------------------ the loop

    def run(self) -> RunSummary:
        """Run every cell not yet finished; return the summary (never raises for a failing cell).

        Holds the run folder's lock throughout (RunFolderBusy when another process has it).
        """
        from qdqbench.core.runlock import RunLock

        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)  # a library caller's folder; the lock guards it
        except OSError as exc:
            raise QdqbenchError(f"{self.run_dir}: cannot create the run folder: {exc.strerror or exc}") from None
        if self.locked:
            return self._run_locked()
        with RunLock(self.run_dir):
            return self._run_locked()

    def _run_locked(self) -> RunSummary:
        started = now()
        try:
            torn = self.store.repair()
            if torn is not None:
                self._note(str(torn))
            for skipped in self.store.scan()[1]:  # damaged lines mid-file: their cells run again
                self._note(f"{skipped}; its cell runs again")
            write_text_atomic(self.run_dir / SUITE_JSON, self.suite.model_dump_json(indent=2))
            cells = self.cells
            done = self.store.finished()
            self._verify_artifacts(done)
            self._write_run_json(started, None)
        except OSError as exc:
            raise QdqbenchError(f"{getattr(exc, 'filename', None) or self.run_dir}: cannot write the run folder "
                                f"({exc.strerror or exc})") from None
        summary = RunSummary(self.run_dir, reused=sum(1 for c in cells if c.id in done), notes=list(self._notes))
        pending = [c for c in cells if c.id not in done]
        groups: OrderedDict[tuple[str, str], list[Cell]] = OrderedDict()
        for c in pending:
            groups.setdefault((c.model, c.task), []).append(c)
        progress = self._progress(len(pending))
        try:
            with progress:
                task_id = progress.add_task("cells", total=len(pending), cell="") if progress.enabled else None
                for (mname, tname), group in groups.items():
                    self._run_group(mname, tname, group, summary, progress, task_id)
        except KeyboardInterrupt as exc:
            summary.interrupted = True
            summary.signal = getattr(exc, "signum", 2)
        except _StoreStopped as exc:
            summary.stopped = str(exc)
        finally:
            try:
                state = "interrupted" if summary.interrupted else "stopped" if summary.stopped else "finished"
                self._write_run_json(started, now() if state == "finished" else None, state)
            except OSError as exc:
                self._say(f"run.json not updated: {exc.strerror or exc}")
        summary.records = self.store.read()
        return summary

    def _verify_artifacts(self, done: dict[str, Record]) -> None:
        """Finished cells whose artifact (path + sha256 in the record) is missing or damaged run again.

        They are dropped from ``done`` (so they run in this pass, once) and their new record says why.
        """
        from qdqbench.core.results import file_sha256

        for cell_id, rec in list(done.items()):
            rel, digest = rec.details.get("path"), rec.details.get("sha256")
            if rec.status != "ok" or not rel or not digest:
                continue
            path = self.run_dir / rel
            if not path.is_file():
                why = f"its artifact {rel} is missing"
            else:
                try:
                    actual = file_sha256(path)
                except OSError as exc:
                    actual = f"unreadable ({exc.strerror or exc})"
                if actual == digest:
                    continue
                why = f"its artifact {rel} is damaged (sha256 {actual[:12]}, recorded {digest[:12]})"
            del done[cell_id]
            self._reruns[cell_id] = why
            self._note(f"{cell_id}: {why}; the cell runs again")

    def _progress(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        return _MaybeProgress(
            Progress(
                TextColumn("[bold]{task.fields[cell]}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=False,
            ),
            enabled=self.show_progress and total > 0,
        )

    def _run_group(self, mname: str, tname: str, cells: list[Cell], summary: RunSummary, progress, task_id) -> None:
        try:
            data = self._load_task_data(mname, tname)
            data.task_key = tname
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 — the whole group fails with one reason
            msg = one_line(exc)
            for c in cells:
                self._finish(c, summary, status="failed", error=f"{mname}/{tname}: {msg}")
                progress.advance(task_id)
            return
        by_scheme: OrderedDict[str, list[Cell]] = OrderedDict()
        for c in cells:
            by_scheme.setdefault(c.scheme, []).append(c)
        for sname, scells in by_scheme.items():
            variant = _Lazy(lambda s=sname: self._build_variant(data, s))
            for c in scells:
                progress.update(task_id, cell=c.id)
                self._run_cell(c, data, variant, summary)
                progress.advance(task_id)
            variant.drop()
            # A pickled module per scheme is tens of MB; it only served this scheme's torch timing.
            (self.run_dir / "artifacts" / mname / tname / sname / "torch-model.pt").unlink(missing_ok=True)

    def _run_cell(self, cell: Cell, data: TaskData, variant: "_Lazy", summary: RunSummary) -> None:
        start, t0 = now(), time.perf_counter()
        handler: Callable[..., dict[str, Any]] = {
            ("torch", "accuracy"): self._accuracy_torch,
            ("torch", "fidelity"): self._fidelity_torch,
            ("onnx", "export"): self._export,
        }.get((cell.backend, cell.kind)) or {
            "accuracy": self._accuracy_engine,
            "fidelity": self._fidelity_engine,
            "latency": self._latency,
        }[cell.kind]
        try:
            fields = handler(cell, data, variant)
            status = fields.pop("status", "ok")
            self._finish(cell, summary, status=status, started_at=start, duration_s=time.perf_counter() - t0, **fields)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 — recorded, the run goes on
            details = {"traceback": traceback.format_exc(limit=8)} if not isinstance(exc, (QdqbenchError, CellFailure)) else {}
            self._finish(cell, summary, status="failed", error=one_line(exc), started_at=start,
                         duration_s=time.perf_counter() - t0, details=details)

    def _finish(self, cell: Cell, summary: RunSummary, *, status: str, **fields) -> None:
        scheme = self.suite.schemes[cell.scheme]
        if cell.id in self._reruns:
            fields["details"] = {**(fields.get("details") or {}), "rerun": self._reruns.pop(cell.id)}
        rec = Record(
            cell=cell.id, status=status, model=cell.model, task=cell.task, scheme=cell.scheme,
            scheme_kind=scheme.kind, backend=cell.backend, kind=cell.kind,
            shape=Shape(batch=cell.batch, seq=cell.seq) if cell.batch is not None else None,
            **fields,
        )
        try:
            self.store.append(rec)
        except ResultStoreError as exc:
            # The result is lost for now (the cell stays pending for --resume); everything already
            # stored is intact. Further cells could not be kept either, so the run stops here.
            summary.failed += 1
            raise _StoreStopped(str(exc)) from None
        setattr(summary, status, getattr(summary, status) + 1)
        if status == "failed":
            self._say(f"[red]failed[/red] {cell.id}: {rec.error}")

    # ------------------------------------------------------------------ data and variants

    def _load_task_data(self, mname: str, tname: str) -> TaskData:
        from qdqbench.tasks import models
        from qdqbench.tasks.evaluate import encode
        from qdqbench.tasks.base import TextExample

        mspec, tspec = self.suite.models[mname], self.suite.tasks[tname]
        max_length = tspec.max_length or mspec.max_length
        resolved = models.resolve(mname, mspec)
        self._say(f"{mname}: weights from {resolved.source}")
        if tspec.kind == "embedding-fidelity":
            from qdqbench.tasks.fidelity import mean_pool, split_texts

            model, tok = models.load_model(resolved, "encoder")
            calib, evals = split_texts(tspec.texts, seed=self.suite.seed)
            return TaskData(
                resolved, model, tok, None, "last_hidden_state",
                encode(tok, [TextExample(t) for t in evals], max_length),
                encode(tok, [TextExample(t) for t in calib], max_length),
                None, lambda o, f: mean_pool(o, f["attention_mask"]).astype(np.float32),
                evals + calib, max_length,
            )
        from qdqbench.tasks import get_task

        task = get_task(tspec.name or ("squad" if tspec.kind == "squad" else tname))
        data_dir = Path(tspec.data_dir) if tspec.data_dir else None
        if getattr(task, "kind", "") == "qa":
            return self._load_qa_data(resolved, task, tspec, data_dir, max_length)
        from qdqbench.tasks.scoring import GlueScorer
        from qdqbench.tasks.glue import align_labels

        model, tok = models.load_model(resolved, "classification")
        perm = align_labels(task, model.config.id2label)
        if not task.is_regression and model.config.num_labels != len(task.label_names):
            raise QdqbenchError(
                f"model '{mname}' has {model.config.num_labels} labels, task {task.name} has {len(task.label_names)}")
        evals = task.load(task.eval_split, data_dir)
        if tspec.eval_limit:
            evals = evals[: tspec.eval_limit]
        train = task.load(task.calibration_split, data_dir)
        notes = {"label_permutation": [int(i) for i in perm]} if perm is not None else {}
        return TaskData(
            resolved, model, tok, task, "logits", encode(tok, evals, max_length), train,
            GlueScorer(task, task.label_array(evals), perm), None,
            [e.text_a + (" " + e.text_b if e.text_b else "") for e in evals], max_length, notes,
        )

    def _load_qa_data(self, resolved, task, tspec, data_dir: Path | None, max_length: int) -> TaskData:
        from qdqbench.tasks import models
        from qdqbench.tasks.scoring import QAScorer

        model, tok = models.load_model(resolved, "question-answering")
        needed = max((self._calibration_spec(s).samples for s in self.suite.schemes.values() if s.kind != "fp32"),
                     default=0)
        split = task.calibration_examples(data_dir, needed, self.suite.seed,
                                          allow_dev_calibration=tspec.allow_dev_calibration)
        evals = split.evaluation[: tspec.eval_limit] if tspec.eval_limit else split.evaluation
        features = task.prepare_features(tok, evals, max_length=max_length, doc_stride=tspec.doc_stride,
                                         max_query_length=tspec.max_query_length)
        notes = {"calibration_source": split.source}
        if split.note:
            notes["calibration_note"] = split.note
        return TaskData(
            resolved, model, tok, task, "qa_logits", features, split.calibration,
            QAScorer(task, features, evals), features.pad_output,
            [e.context for e in evals], max_length, notes,
        )

    @staticmethod
    def _calibration_spec(scheme: SchemeSpec):
        """The scheme's calibration settings (a peer recipe states its own in ``peer``)."""
        if not scheme.is_peer:
            return scheme.calibration
        from qdqbench.quant.peers import calibration_plan
        from qdqbench.config.suite import CalibrationSpec

        plan = calibration_plan(scheme.kind, scheme.peer)
        if plan is None:
            return CalibrationSpec(samples=1)
        samples, batch_size, seed = plan
        return CalibrationSpec(samples=samples, batch_size=batch_size, seed=seed)

    def _calibration_batches(self, data: TaskData, scheme: SchemeSpec):
        """The scheme's calibration sample (reproducible by its seed), batched."""
        from qdqbench.tasks.evaluate import Encoded, encode

        cal = self._calibration_spec(scheme)
        pool = data.calib_pool
        n = len(pool.input_ids) if isinstance(pool, Encoded) else len(pool)
        idx = sorted(np.random.default_rng(cal.seed).choice(n, size=min(cal.samples, n), replace=False))
        if isinstance(pool, Encoded):
            sample = Encoded([pool.input_ids[i] for i in idx], [pool.token_type_ids[i] for i in idx], pool.pad_id)
        elif getattr(data.task, "kind", "") == "qa":
            tspec = self.suite.tasks[data.task_key]
            sample = data.task.prepare_features(data.tokenizer, [pool[i] for i in idx], max_length=data.max_length,
                                                doc_stride=tspec.doc_stride, max_query_length=tspec.max_query_length)
        else:
            sample = encode(data.tokenizer, [pool[i] for i in idx], data.max_length)
        return len(idx), sample.batches(cal.batch_size)

    def _settings(self, scheme: SchemeSpec):
        from qdqbench.quant.qdqbert import QDQSettings

        return QDQSettings(
            bits=scheme.bits, groups=tuple(scheme.groups), per_channel_weights=scheme.weights == "per-channel",
            calib_method=scheme.calibration.method, num_bins=scheme.calibration.num_bins, skip=tuple(scheme.skip),
            clip_gelu=scheme.clip_gelu, fuse_qkv=scheme.fuse_qkv, weight_bits=scheme.weight_bits,
        )

    def _build_variant(self, data: TaskData, sname: str):
        """The fp32 model itself, or a calibrated QDQBERT copy of it (amaxes saved as an artifact)."""
        from qdqbench.tasks.evaluate import torch_forward
        from qdqbench.quant.build import build_variant
        from qdqbench.quant.qdqbert import count_quantizers
        from qdqbench.quant.quantizer import quantizers

        scheme = self.suite.schemes[sname]
        if scheme.kind == "fp32" or scheme.is_peer:
            # A peer recipe starts from the fp32 model; its own tool quantizes the export.
            return _Variant(data.model, {})
        settings = self._settings(scheme)
        artifacts = self.run_dir / "artifacts" / data.resolved.name / data.task_key / sname
        t0 = time.perf_counter()
        n, batches = self._calibration_batches(data, scheme)
        info: dict[str, Any] = {}
        if scheme.recipe == "auto":
            model, info["recipe"] = self._auto_recipe(data, sname, scheme, settings, batches, artifacts)
        else:
            model, changes = build_variant(
                data.model, settings, lambda m: [torch_forward(m, data.output)(f) for _, f in batches],
                scheme.calibration.method, percentile=scheme.calibration.percentile)
            if changes:
                info["post_calibration"] = changes
            if scheme.qat is not None:
                info["qat"] = self._qat(data, scheme.qat, model, artifacts / "qat")
        amaxes = {name: float(q.amax.max()) for name, q in quantizers(model) if q.mode != "disabled"}
        # The calibrated ranges are an artifact: reviewers compare them across runs and calibrators.
        write_json_atomic(artifacts / "amax.json", amaxes)
        info = {
            "calibration": {"method": scheme.calibration.method, "samples": n,
                            "seconds": round(time.perf_counter() - t0, 3), **data.notes},
            "quantizers": count_quantizers(model),
            "amax": str((artifacts / "amax.json").relative_to(self.run_dir)),
            **info,
        }
        return _Variant(model, info, amaxes)

    def _train_data(self, data: TaskData, limit: int | None, seed: int, exclude: int = 0):
        """(encoded, labels) of the training split, shuffled by seed, skipping the first ``exclude``."""
        from qdqbench.tasks.evaluate import encode

        if data.scorer is None or getattr(data.task, "kind", "") == "qa":
            raise QdqbenchError("QAT and recipe: auto need a labelled GLUE task (classification or regression)")
        pool = data.calib_pool
        order = np.random.default_rng(seed + 7919).permutation(len(pool))[exclude:]
        if limit:
            order = order[:limit]
        examples = [pool[i] for i in order]
        return encode(data.tokenizer, examples, data.max_length), data.task.label_array(examples)

    def _qat_plan(self, data: TaskData, spec):
        from qdqbench.quant.qat import QATError, QATPlan

        original = spec.original
        ft = data.resolved.path / "finetune.json"
        if original is None and ft.is_file():
            original = json.loads(ft.read_text(encoding="utf-8"))
        if original is not None:
            plan = QATPlan.from_finetune(original, fraction=spec.fraction, lr_fraction=spec.lr_fraction,
                                         warmup=spec.warmup)
            return QATPlan(steps=spec.steps or plan.steps, lr=spec.lr or plan.lr, warmup=spec.warmup,
                           schedule="cosine", batch_size=spec.batch_size or plan.batch_size, source=plan.source)
        if spec.steps is None or spec.lr is None:
            raise QATError(f"QAT needs steps and lr, or the original schedule (finetune.json beside "
                           f"{data.resolved.path} or qat.original)")
        return QATPlan(steps=spec.steps, lr=spec.lr, warmup=spec.warmup, schedule="cosine",
                       batch_size=spec.batch_size or 32, source={"given": True})

    def _qat(self, data: TaskData, spec, model, checkpoint_dir: Path) -> dict[str, Any]:
        """Fine-tune ``model`` in place with fake quantization; checkpoints make it resumable."""
        from qdqbench.quant.qat import classification_loss, finetune, regression_loss, train_batches

        plan = self._qat_plan(data, spec)
        encoded, labels = self._train_data(data, spec.max_train_examples, self.suite.seed)
        batches = train_batches(encoded, labels, plan.batch_size, label_perm=data.scorer.label_perm)
        every = spec.checkpoint_every or max(1, plan.steps // 5)

        def progress(step) -> None:
            if step.step == 1 or step.step % every == 0 or step.step == step.steps:
                self._say(f"  QAT step {step.step}/{step.steps} loss {step.loss:.4f}")

        result = finetune(model, batches, steps=plan.steps, lr=plan.lr, warmup=plan.warmup, schedule=plan.schedule,
                          seed=self.suite.seed, loss_fn=regression_loss if data.task.is_regression else classification_loss,
                          checkpoint_dir=checkpoint_dir, checkpoint_every=every, progress=progress)
        model.eval()
        return {"plan": plan.to_dict(), **result.to_dict()}

    def _auto_recipe(self, data: TaskData, sname: str, scheme: SchemeSpec, settings, batches, artifacts: Path):
        """``recipe: auto``: calibrators → partial → QAT, chosen on a held-out train slice."""
        from qdqbench.quant.auto import (Budget, Calibrations, CalibratorSpec, MeetsBound, auto_recipe,
                                        logits_sqnr_proxy, outputs_fn)
        from qdqbench.tasks.evaluate import run_batches, torch_forward

        auto = scheme.auto
        bs = self.suite.tasks[data.task_key].eval_batch_size
        selection, sel_labels = self._train_data(data, auto.selection_examples, self.suite.seed)
        scorer = type(data.scorer)(data.task, sel_labels, data.scorer.label_perm)
        metric = data.task.primary_metric

        def score(model) -> float:
            out = run_batches(selection, bs, torch_forward(model, data.output), reduce=data.reduce)
            return scorer.scores(scorer.predictions(out))[metric]

        # The sensitivity proxy (logits SQNR) runs dozens of times: a 128-example slice is enough
        # to rank parts, and the bound itself is still checked on the whole selection split.
        from qdqbench.tasks.evaluate import Encoded

        k = min(128, len(selection.input_ids))
        proxy_set = Encoded(selection.input_ids[:k], selection.token_type_ids[:k], selection.pad_id)
        forward = outputs_fn(proxy_set, bs, data.output, data.reduce)
        acc = self.suite.accuracy
        meets = MeetsBound(metric, score, baseline=score(data.model), bound=acc.bound * (1 - auto.headroom),
                           mode=acc.mode)
        calibrate = Calibrations(data.model, settings,
                                 run_calibration=lambda m: [torch_forward(m, data.output)(f) for _, f in batches])
        qat_fn = None
        if auto.qat:
            spec = scheme.qat or QATSpec()
            qat_fn = lambda m: self._qat(data, spec, m, artifacts / "qat")  # noqa: E731
        result = auto_recipe(
            calibrate, meets, calibrators=[CalibratorSpec.parse(c) for c in auto.calibrators],
            score_fn=logits_sqnr_proxy(forward(data.model), forward),
            latency_fn=self._latency_fn(data, auto, artifacts), qat_fn=qat_fn,
            budget=Budget(max_evaluations=auto.max_evaluations, max_seconds=auto.max_minutes * 60),
            partial=auto.partial, progress=lambda msg: self._say(f"  auto: {msg}"),
        )
        info = result.to_dict()
        info["selection_split"] = f"{len(sel_labels)} held-out training examples (the dev set only scores the choice)"
        info["selection_bound"] = {"bound": meets.bound, "mode": meets.mode, "headroom": auto.headroom}
        return result.model, info

    def _latency_fn(self, data: TaskData, auto, artifacts: Path):
        """Export a candidate and time it on the target engine at the largest timed batch (or None).

        Returns the median latency in ms, timed with the suite's settings in a worker process.
        """
        engines = [b for b in self.suite.backends if b != "torch"]
        target = auto.target_backend or (engines[0] if engines else None)
        if target is None:
            return None
        from qdqbench.engines import engine_request
        from qdqbench.tasks.evaluate import timing_feeds

        options = dict(engine_request(target, "qdq").options)
        from qdqbench.quant.export import export_onnx
        from qdqbench.engines.timing import measure_in_subprocess

        batch, seq = max(self.suite.shapes.batch), self.suite.shapes.seq[0]
        settings = self._timing_settings()
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
            _, feeds = data.eval_encoded.batches(2)[0]
            try:
                export_onnx(model, path, {k: torch.from_numpy(v) for k, v in feeds.items()}, output=data.output)
                # The suite's own timing settings, and the median: a stall of the machine during
                # one short measurement must not decide between two candidates.
                stats, _ = measure_in_subprocess(target, path, "int8", feeds_path, settings,
                                                 threads=self._threads(), options=options)
                return stats.median
            except QdqbenchError as exc:
                self._say(f"  auto: latency of candidate {counter['n']} unknown ({exc})")
                return None
            finally:
                path.unlink(missing_ok=True)

        return latency

    # ------------------------------------------------------------------ torch cells

    def _torch_outputs(self, cell: Cell, data: TaskData, variant: "_Lazy") -> np.ndarray:
        from qdqbench.tasks.evaluate import run_batches, torch_forward

        key = (cell.model, cell.task, cell.scheme, "torch")
        if key in self._outputs:
            return self._outputs[key]
        path = self._artifacts(cell) / "torch-outputs.npy"
        out = _load_npy(path) if path.exists() else None
        if out is None:
            bs = self.suite.tasks[cell.task].eval_batch_size
            out = run_batches(data.eval_encoded, bs, torch_forward(variant.get().model, data.output), reduce=data.reduce)
            save_atomic(path, lambda fh: np.save(fh, out))
        self._outputs[key] = out
        return out

    def _baseline_outputs(self, cell: Cell, data: TaskData) -> np.ndarray:
        base = Cell(cell.model, cell.task, self.suite.baseline_scheme, "torch", cell.kind)
        fp32 = _Lazy(lambda: _Variant(data.model, {}))
        return self._torch_outputs(base, data, fp32)

    def _score(self, cell: Cell, data: TaskData, outputs: np.ndarray, precision: str,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        from qdqbench.core.stats import bootstrap_ci, paired_bootstrap_delta
        from qdqbench.core.verdict import make_verdict

        task, acc, scorer = data.task, self.suite.accuracy, data.scorer
        preds = scorer.predictions(outputs)
        scores = scorer.scores(preds)
        metrics = []
        for spec in task.metrics:
            lo = hi = None
            if acc.bootstrap:
                fn, p, y = scorer.bootstrap_inputs(preds, spec.name)
                lo, hi = bootstrap_ci(fn, p, y, n_resamples=acc.bootstrap, seed=self.suite.seed)
            metrics.append(Metric(name=spec.name, value=scores[spec.name], unit="ratio",
                                  higher_is_better=spec.higher_is_better, ci_low=lo, ci_high=hi))
        details: dict[str, Any] = {"primary_metric": task.primary_metric, "examples": scorer.count(preds), **data.notes}
        verdict = None
        if self.suite.schemes[cell.scheme].kind != "fp32" or cell.backend != "torch":
            base_preds = scorer.predictions(self._baseline_outputs(cell, data))
            baseline = scorer.scores(base_preds)[task.primary_metric]
            drop_ci = None
            if acc.bootstrap:
                fn, base_p, y = scorer.bootstrap_inputs(base_preds, task.primary_metric)
                _, p, _ = scorer.bootstrap_inputs(preds, task.primary_metric)
                _, lo, hi = paired_bootstrap_delta(fn, base_p, p, y, n_resamples=acc.bootstrap, seed=self.suite.seed)
                drop_ci = (lo, hi)
            details["changed"] = scorer.changed(base_preds, preds)
            verdict = make_verdict(task.primary_metric, baseline, scores[task.primary_metric],
                                   acc.bound, acc.mode, drop_ci)
        details.update(extra or {})
        return {"metrics": metrics, "verdict": verdict, "precision": precision, "details": details}

    def _accuracy_torch(self, cell: Cell, data: TaskData, variant: "_Lazy") -> dict[str, Any]:
        t0 = time.perf_counter()
        out = self._torch_outputs(cell, data, variant)
        kind = self.suite.schemes[cell.scheme].kind
        fields = self._score(cell, data, out, "fp32" if kind == "fp32" else "int8-fakequant",
                             {"eval_s": round(time.perf_counter() - t0, 3), **variant.get().info})
        return fields

    def _fidelity_torch(self, cell: Cell, data: TaskData, variant: "_Lazy") -> dict[str, Any]:
        from qdqbench.tasks.fidelity import fidelity_metrics

        out = self._torch_outputs(cell, data, variant)
        ref = self._baseline_outputs(cell, data)
        return {"metrics": fidelity_metrics(ref, out), "precision": "int8-fakequant",
                "details": {"examples": int(len(out)), "reference": "fp32 torch", **variant.get().info}}

    # ------------------------------------------------------------------ export and engines

    def _onnx_path(self, cell: Cell) -> Path:
        return self._artifacts(cell) / "model.onnx"

    def _export(self, cell: Cell, data: TaskData, variant: "_Lazy") -> dict[str, Any]:
        import torch

        from qdqbench.quant.export import check_qdq_structure, export_onnx

        scheme = self.suite.schemes[cell.scheme]
        if scheme.is_peer:
            return self._export_peer(cell, data, scheme)
        idx, feeds = data.eval_encoded.batches(2)[0]
        sample = {k: torch.from_numpy(v) for k, v in feeds.items()}
        info = export_onnx(variant.get().model, self._onnx_path(cell), sample, output=data.output)
        details: dict[str, Any] = {"path": str(info.path.relative_to(self.run_dir)), "sha256": info.sha256,
                                   "op_counts": info.op_counts}
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

    def _export_peer(self, cell: Cell, data: TaskData, scheme: SchemeSpec) -> dict[str, Any]:
        """Quantize the fp32 export with the peer's own tool (ONNX Runtime, ModelOpt)."""
        from qdqbench.quant.peers import build_peer_onnx, calibration_plan

        fp32 = self._engine_artifact(Cell(cell.model, cell.task, self.suite.baseline_scheme, "onnx", "export"))
        feeds = None
        if calibration_plan(scheme.kind, scheme.peer) is not None:
            _, batches = self._calibration_batches(data, scheme)
            feeds = (f for _, f in batches)
        facts = build_peer_onnx(scheme.kind, scheme.peer, fp32, self._onnx_path(cell), feeds,
                                torch_model=data.model, output=data.output)
        details = {"path": str(self._onnx_path(cell).relative_to(self.run_dir)), "sha256": facts.get("sha256"),
                   "op_counts": facts.get("op_counts", {}), "peer": facts}
        metrics = [Metric(name="onnx_mb", value=round(facts.get("size_mb", 0.0), 3), unit="MB", higher_is_better=False),
                   Metric(name="qdq_nodes", value=facts.get("qdq_nodes", 0), unit="nodes")]
        return {"metrics": metrics, "details": details, "precision": "int8"}

    def _engine_artifact(self, cell: Cell) -> Path:
        path = self._onnx_path(cell)
        export_id = Cell(cell.model, cell.task, cell.scheme, "onnx", "export").id
        rec = self.store.finished().get(export_id)
        if rec is None or rec.status != "ok" or not path.exists():
            raise CellFailure(f"needs the ONNX export of {cell.scheme}, which did not finish ({export_id})")
        return path

    def _engine_precision(self, cell: Cell) -> str:
        """The precision the cell's engine (or engine variant) is asked for (the backends decide)."""
        from qdqbench.engines import engine_request

        return engine_request(cell.backend, self.suite.schemes[cell.scheme].kind).precision

    def _engine_options(self, cell: Cell) -> dict[str, Any]:
        """``prepare`` options of the cell's engine variant (``qdqbench.engines.engine_request``)."""
        from qdqbench.engines import engine_request

        return dict(engine_request(cell.backend, self.suite.schemes[cell.scheme].kind).options)

    def _engine_outputs(self, cell: Cell, data: TaskData) -> tuple[np.ndarray, Any]:
        from qdqbench.engines import get_backend
        from qdqbench.tasks.evaluate import run_batches

        backend = get_backend(cell.backend)
        reason = backend.unavailable_reason()
        if reason:
            raise CellFailure(f"{cell.backend} unavailable: {reason}")
        shapes = [Shape(batch=b, seq=s) for b in self.suite.shapes.batch for s in self.suite.shapes.seq]
        session = backend.prepare(self._engine_artifact(cell), self._engine_precision(cell), shapes,
                                  threads=self._threads(), **self._engine_options(cell))
        bs = self.suite.tasks[cell.task].eval_batch_size
        return run_batches(data.eval_encoded, bs, session.predict, reduce=data.reduce), session

    def _accuracy_engine(self, cell: Cell, data: TaskData, variant: "_Lazy") -> dict[str, Any]:
        t0 = time.perf_counter()
        out, session = self._engine_outputs(cell, data)
        extra: dict[str, Any] = {"eval_s": round(time.perf_counter() - t0, 3), "engine": session.info}
        if not self.suite.schemes[cell.scheme].is_peer:
            # The engine against the torch model it was exported from: the export's fidelity.
            ref = self._torch_outputs(Cell(cell.model, cell.task, cell.scheme, "torch", cell.kind), data, variant)
            extra["changed_vs_torch"] = data.scorer.changed(data.scorer.predictions(ref), data.scorer.predictions(out))
            extra["max_abs_diff_vs_torch"] = float(np.abs(out - ref).max())
        return self._score(cell, data, out, session.precision, extra)

    def _fidelity_engine(self, cell: Cell, data: TaskData, variant: "_Lazy") -> dict[str, Any]:
        from qdqbench.tasks.fidelity import fidelity_metrics

        out, session = self._engine_outputs(cell, data)
        ref = self._baseline_outputs(cell, data)
        return {"metrics": fidelity_metrics(ref, out), "precision": session.precision,
                "details": {"examples": int(len(out)), "reference": "fp32 torch", "engine": session.info}}

    def _latency(self, cell: Cell, data: TaskData, variant: "_Lazy") -> dict[str, Any]:
        from qdqbench.engines import get_backend
        from qdqbench.tasks.evaluate import timing_feeds
        from qdqbench.engines.timing import measure_in_subprocess

        reason = get_backend(cell.backend).unavailable_reason()
        if reason:
            raise CellFailure(f"{cell.backend} unavailable: {reason}")
        scheme = self.suite.schemes[cell.scheme]
        options: dict[str, Any] = {}
        if cell.backend == "torch":
            spec = self.suite.timing.torch
            artifact = self._torch_artifact(cell, data, variant)
            precision = spec.float_precision if scheme.kind == "fp32" else "int8"
            options = {"device": spec.device, "cuda_graph": spec.cuda_graph}
        else:
            artifact = self._engine_artifact(cell)
            precision = self._engine_precision(cell)
            options = self._engine_options(cell)
        inputs = self.run_dir / "artifacts" / "inputs" / f"{cell.model}-{cell.task}-b{cell.batch}s{cell.seq}.npz"
        if not _npz_readable(inputs):
            inputs.parent.mkdir(parents=True, exist_ok=True)
            feeds = timing_feeds(data.tokenizer, data.texts, cell.batch, cell.seq)
            save_atomic(inputs, lambda fh: np.savez(fh, **feeds))
        settings = self._timing_settings()
        stats, engine = measure_in_subprocess(cell.backend, artifact, precision, inputs, settings,
                                              threads=self._threads(), options=options)
        extra: dict[str, Any] = {}
        if cell.backend == "onnxruntime" and scheme.kind == "fp32" and self.suite.timing.best_fp32:
            stats, engine, extra = self._best_fp32(data, artifact, inputs, settings, stats, engine)
        details = {"iterations": stats.n, "warmup_iters": stats.warmup_iters, "threads": self._threads(),
                   "method": stats.method, "wall_s": round(stats.wall_s, 3), "engine": engine.get("info", {}),
                   **extra, "samples_ms": [round(x, 4) for x in stats.samples_ms]}
        return {"metrics": stats.to_metrics(), "precision": engine.get("precision", ""), "details": details}

    def _best_fp32(self, data: TaskData, artifact: Path, inputs: Path, settings, plain, plain_engine):
        """Time ORT's transformer-fused fp32 graph too; the faster of the two is the baseline."""
        from qdqbench.engines.timing import measure_in_subprocess

        config = getattr(data.model, "config", None)
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0) or 0
        hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", 0) or 0
        summary = {"plain": {"mean_ms": round(plain.mean, 4), "p99_ms": round(plain.percentile(99), 4)}}
        try:
            fused, fused_engine = measure_in_subprocess(
                "onnxruntime", artifact, "fp32", inputs, settings, threads=self._threads(),
                options={"transformer_fusion": True, "num_heads": int(heads), "hidden_size": int(hidden)})
        except QdqbenchError as exc:
            summary["transformer_fusion"] = {"error": one_line(exc)}
            return plain, plain_engine, {"fp32_configs": summary, "fp32_baseline": "plain"}
        summary["transformer_fusion"] = {"mean_ms": round(fused.mean, 4), "p99_ms": round(fused.percentile(99), 4),
                                         "fused_ops": fused_engine.get("info", {}).get("transformer_fusion_ops", {})}
        if fused.mean < plain.mean:
            return fused, fused_engine, {"fp32_configs": summary, "fp32_baseline": "transformer_fusion"}
        return plain, plain_engine, {"fp32_configs": summary, "fp32_baseline": "plain"}

    def _torch_artifact(self, cell: Cell, data: TaskData, variant: "_Lazy") -> Path:
        """The scheme's torch model saved for the worker process (once per scheme, removed after)."""
        from qdqbench.engines.torch import save_torch_artifact

        path = self._artifacts(cell) / "torch-model.pt"
        if not path.exists():
            save_torch_artifact(variant.get().model, path, output=data.output)
        return path


# --------------------------------------------------------------------------- small helpers


def save_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """``write(binary file)`` into a temporary file, then rename it to ``path``.

    Artifacts that a resumed run reuses when they exist (timing inputs, torch outputs) must never
    be half-written: a run killed mid-write would leave a truncated file that the resume trusts.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_npy(path: Path) -> np.ndarray | None:
    """A saved output array, or None when it is unreadable (then it is recomputed, not trusted)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def _npz_readable(path: Path) -> bool:
    """True when ``path`` is a complete ``.npz`` (a damaged one is rebuilt before timing)."""
    import zipfile

    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as npz:
            return all(npz[name].size >= 0 for name in npz.files) and bool(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


@dataclass
class _Variant:
    model: Any
    info: dict[str, Any]
    amaxes: dict[str, float] = field(default_factory=dict)


class _Lazy:
    """Build a value on first use; remember a failure so dependent cells fail with its reason."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._value: Any = None
        self._error: str | None = None

    def get(self) -> Any:
        """The value, building it once."""
        if self._error is not None:
            raise CellFailure(self._error)
        if self._value is None:
            try:
                self._value = self._build()
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001
                self._error = f"building the variant failed: {one_line(exc)}"
                raise CellFailure(self._error) from exc
        return self._value

    def drop(self) -> None:
        """Forget the value (frees a model copy between schemes)."""
        self._value = None


class _MaybeProgress:
    """A rich Progress that can be switched off (tests, --quiet) without changing the call sites."""

    def __init__(self, progress, enabled: bool):
        self.progress, self.enabled = progress, enabled

    def __enter__(self):
        if self.enabled:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            return self.progress.__exit__(*exc)
        return False

    def add_task(self, *a, **k):
        return self.progress.add_task(*a, **k) if self.enabled else None

    def update(self, task_id, **k):
        if self.enabled:
            self.progress.update(task_id, **k)

    def advance(self, task_id):
        if self.enabled:
            self.progress.advance(task_id)
