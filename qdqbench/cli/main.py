"""The ``qdqbench`` command: run | ls | validate | report | compare | merge | history | env.

Thin: it parses arguments, calls the library and maps outcomes to the exit codes of
``EXIT_CODES`` (``cli.exits``; README's table is written from the same list): 1 means only "a gate failed"; bad
input, a damaged or busy run folder and a full disk are one line and 2; a bug is 70 with its
traceback in a log file; a signal N is 128+N with the resume hint.
``ls``, ``validate``, ``compare``, ``merge`` and ``history`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

from qdqbench import __version__
from qdqbench.cli import compare, doctor, history, merge
from qdqbench.cli.exits import (  # noqa: F401 — EXIT_CODES and EXIT_CELLS are re-exported
    EXIT_CELLS,
    EXIT_CODES,
    EXIT_GATE,
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_PIPE,
)
from qdqbench.cli.options import add_fail_on_argument, add_shard_argument
from qdqbench.core.errors import Interrupted, QdqbenchError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qdqbench",
                                description="INT8 (Q/DQ) BERT accuracy and speed, side by side with fp32.")
    p.add_argument("--version", action="version", version=f"qdqbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def suite_args(sp: argparse.ArgumentParser, required: bool = True) -> None:
        sp.add_argument("suite", type=Path, nargs=None if required else "?", help="suite YAML file")
        sp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite value, e.g. schemes.int8-max.calibration.samples=256 (repeatable)")
        sp.add_argument("--model-path", action="append", default=[], metavar="ID=DIR",
                        help="use a local checkpoint folder for a suite model key or Hub id (repeatable)")
        sp.add_argument("--data-dir", metavar="DIR", help="GLUE data folder (glue_data layout) for every GLUE task")

    run = sub.add_parser("run", help="run a suite and write a run folder with results and a report")
    suite_args(run, required=False)
    run.add_argument("--resume", type=Path, metavar="DIR",
                     help="resume an interrupted run folder (skips finished cells)")
    run.add_argument("--out", type=Path, metavar="DIR",
                     help="parent folder for the run folder (default: the suite's output.dir)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_shard_argument(run)
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="where the model × task groups run: local (this process, default) or ray "
                          "(one Ray task per group; needs qdqbench[ray])")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="with --executor ray: auto or ray://host:port joins a cluster "
                          "(default: start a local Ray instance)")
    run.add_argument("--artifacts", type=Path, metavar="DIR",
                     help="write artifacts (ONNX exports, timing inputs, engine caches) under DIR/<run id>, "
                          "on storage every node reaches (default: the run folder); a resume finds them there")
    add_fail_on_argument(run, "run")

    ls = sub.add_parser("ls", help="print the expanded matrix of a suite (no torch import)")
    suite_args(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per cell")
    add_shard_argument(ls)

    val = sub.add_parser("validate", help="validate a suite: schema, references, models, tasks, data")
    suite_args(val)

    rep = sub.add_parser("report", help="(re)render the report of a run folder")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--format", dest="formats", action="append", choices=["html", "md", "csv"],
                     help="formats to write (default: html, md, csv)")

    compare.add_parser(sub)
    merge.add_parser(sub)
    history.add_parser(sub)
    doctor.add_parser(sub)
    sub.add_parser("env", help="print versions, CPU/GPU and git facts as JSON")
    return p


def preflight(suite, *, fetch: bool = False) -> list[str]:
    """Problems knowable before heavy work (``qdqbench.run.preflight``)."""
    from qdqbench.run.preflight import preflight as check

    return check(suite, fetch=fetch)


def _load(args):
    from qdqbench.config.suite import load_suite, parse_model_path

    model_paths = dict(parse_model_path(x) for x in args.model_path)
    return load_suite(args.suite, args.sets, model_paths, args.data_dir)


def _cells(suite, shard: str | None):
    """(cells, (K, N) or None, where the shard came from: argument, QDQBENCH_SHARD, kubernetes, slurm)."""
    from qdqbench.config.suite import expand
    from qdqbench.run.shard import resolve_shard, shard_cells

    cells = expand(suite)
    where, source = resolve_shard(shard)
    if where is None:
        return cells, None, None
    k, n = where
    return shard_cells(cells, k, n, suite), (k, n), source


def _executor(args, suite):
    """None (in process) or a connected RayExecutor; one line when Ray is missing or unreachable."""
    if args.executor != "ray":
        if args.ray_address:
            raise QdqbenchError("--ray-address needs --executor ray")
        return None
    from qdqbench.run.ray_executor import RayExecutor

    spec = suite.executor.ray if suite.executor is not None else None
    executor = RayExecutor(args.ray_address, spec)
    executor.connect()
    return executor


def cmd_ls(args) -> int:
    suite = _load(args)
    cells, _, _ = _cells(suite, args.shard)
    for c in cells:
        if args.json:
            print(json.dumps({"cell": c.id, "model": c.model, "task": c.task, "scheme": c.scheme,
                              "backend": c.backend, "kind": c.kind, "batch": c.batch, "seq": c.seq}))
        else:
            print(c.id)
    if not args.json:
        print(f"{len(cells)} cells", file=sys.stderr)
    return EXIT_OK


def cmd_validate(args) -> int:
    suite = _load(args)
    problems = preflight(suite)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return EXIT_INPUT
    from qdqbench.config.suite import expand

    print(f"{args.suite}: ok ({len(expand(suite))} cells)")
    return EXIT_OK


def cmd_run(args) -> int:
    from rich.console import Console

    from qdqbench.core.results import load_run_info
    from qdqbench.core.runlock import RunLock
    from qdqbench.review.gates import check_gates, format_outcomes, parse_gates
    from qdqbench.run.runner import Runner, load_run_suite, new_run_dir

    console = Console(stderr=True, soft_wrap=True)  # paths and the resume command stay on one line
    gates = parse_gates(args.fail_on, "run")
    lock = None
    if args.resume:
        if args.suite or args.sets or args.model_path or args.data_dir or args.shard or args.artifacts:
            raise QdqbenchError("--resume takes the suite, shard and artifacts folder stored in the run "
                                "folder; give no suite or overrides")
        run_dir, suite_path = args.resume, None
        if not Path(run_dir).is_dir():
            raise QdqbenchError(f"{run_dir}: run folder not found")
        # The lock first: a second resume of a busy folder stops before it reads anything.
        lock = RunLock(run_dir).acquire()
        args.log_dir = run_dir
        suite = load_run_suite(run_dir)
        shard = load_run_info(run_dir).get("shard")
        shard_text = f"{shard['index']}/{shard['count']}" if isinstance(shard, dict) and "index" in shard else None
        stored_source = shard.get("source") if isinstance(shard, dict) else None
    else:
        if args.suite is None:
            raise QdqbenchError("run: give a suite file, or --resume DIR")
        suite, suite_path, shard_text, stored_source = _load(args), args.suite, args.shard, None
    try:
        cells, shard, shard_source = _cells(suite, shard_text)
        shard_source = stored_source or shard_source
        problems = preflight(suite, fetch=True)
        if problems:
            for p in problems:
                print(p, file=sys.stderr)
            return EXIT_INPUT
        if args.artifacts is not None:  # before the run folder: a bad DIR is one line
            from qdqbench.run.paths import check_artifacts_dir

            args.artifacts = check_artifacts_dir(args.artifacts)
        executor = _executor(args, suite)  # before the run folder: an unreachable cluster is one line
        if lock is None:
            run_dir = new_run_dir(suite, args.out, shard)  # created exclusively, locked at once
            lock = RunLock(run_dir).acquire()
            args.log_dir = run_dir
        console.print(f"run folder: {run_dir}")
        summary = Runner(suite, run_dir, suite_path=suite_path, console=console, show_progress=not args.quiet,
                         cells=cells, shard=shard, shard_source=shard_source, locked=True,
                         executor=executor, artifacts=args.artifacts).run()
        paths = _write_report(run_dir, suite.output.formats, console)
        _print_summary(summary, console)
        if summary.interrupted:
            console.print(f"[yellow]interrupted[/yellow]: resume with  qdqbench run --resume {run_dir}")
        if summary.stopped:
            console.print(f"[red]stopped[/red]: {summary.stopped}; make room, then resume with  "
                          f"qdqbench run --resume {run_dir}", highlight=False)
        if summary.lost:
            print(f"error: {summary.lost}; nothing stored is lost: qdqbench run --resume {run_dir}",
                  file=sys.stderr)
        if paths:
            console.print(f"report: {paths[0]}")
        print(run_dir)
    finally:
        if lock is not None:
            lock.release()
    outcomes = check_gates(summary.records, gates)
    for line in format_outcomes(outcomes):
        console.print(line, markup=False, highlight=False)
    if summary.interrupted or summary.stopped or summary.lost:
        return summary.exit_code
    return EXIT_GATE if any(not o.passed for o in outcomes) else summary.exit_code


def _write_report(run_dir: Path, formats, console, *, strict: bool = False) -> list[Path]:
    """Render the reports; after a run (not ``strict``) a failure is one line and the data stays."""
    from qdqbench.report import write_report

    try:
        return write_report(Path(run_dir), tuple(formats))
    except QdqbenchError:
        if strict:
            raise
        console.print(f"[red]report failed[/red]: {sys.exc_info()[1]} (results are in {run_dir}/results.jsonl)",
                      highlight=False, soft_wrap=True)
        return []
    except Exception as exc:  # noqa: BLE001 — a report bug must not lose the run; the data is on disk
        if strict:
            raise  # `qdqbench report` itself: a rendering bug is an internal error (exit 70, logged)
        console.print(f"[red]report failed[/red]: {type(exc).__name__}: {exc} (results are in {run_dir}/results.jsonl)",
                      highlight=False, soft_wrap=True)
        return []


def _print_summary(summary, console) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.run_dir.name}", show_lines=False)
    for col in ("cell", "status", "precision", "result"):
        table.add_column(col)
    for r in summary.records:
        table.add_row(r.cell, _status(r.status), r.precision, _headline(r))
    console.print(table)
    console.print(f"{summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped, "
                  f"{summary.reused} reused from an earlier run of this folder")


def _status(s: str) -> str:
    return {"ok": "[green]ok[/green]", "failed": "[red]failed[/red]"}.get(s, s)


def _headline(r) -> str:
    if r.status != "ok":
        return (r.error or "")[:120]
    if r.verdict is not None:
        v = r.verdict
        mark = "[green]PASS[/green]" if v.passed else "[red]FAIL[/red]"
        return f"{v.metric} {100 * v.value:.2f} vs {100 * v.baseline:.2f} (drop {100 * v.drop:+.2f} pts) {mark}"
    if r.kind == "accuracy":
        m = r.metric(r.primary_metric or "")
        return f"{m.name} {100 * m.value:.2f}" if m and m.value is not None else ""
    if r.kind == "fidelity":
        c, s = r.metric("cosine_mean"), r.metric("sqnr_db")
        return f"cosine {c.value:.4f}, SQNR {s.value:.1f} dB" if c and s else ""
    if r.kind == "latency":
        m, t = r.metric("latency_mean_ms"), r.metric("throughput")
        return f"{m.value:.2f} ms mean, {t.value:.1f} seq/s" if m and t else ""
    if r.kind == "export":
        m = r.metric("qdq_nodes")
        return f"{int(m.value)} Q/DQ nodes" if m else ""
    return ""


def cmd_report(args) -> int:
    from rich.console import Console

    if not (args.run_dir / "results.jsonl").is_file():
        raise QdqbenchError(f"{args.run_dir}: not a run folder (no results.jsonl)")
    paths = _write_report(args.run_dir, tuple(args.formats or ("html", "md", "csv")), Console(stderr=True),
                          strict=True)
    for p in paths:
        print(p)
    return EXIT_OK if paths else EXIT_INPUT


def cmd_env(args) -> int:
    from qdqbench.core.env import environment

    print(json.dumps(environment(), indent=2))
    return EXIT_OK


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def _install_signal_handlers() -> dict[int, object]:
    """SIGTERM and SIGHUP unwind like Ctrl-C (workers killed, run folder consistent); old handlers."""
    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, _raise_interrupted)
        except (ValueError, OSError):  # not the main thread (tests calling main() from a thread)
            pass
    return old


def _crash_log(args, exc: BaseException) -> Path | None:
    """Write the traceback of an internal error into the run folder (or the temp folder); its path."""
    folder = getattr(args, "log_dir", None) or getattr(args, "run_dir", None)
    folder = Path(folder) if folder and Path(folder).is_dir() else Path(tempfile.gettempdir())
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = folder / f"qdqbench-error-{stamp}-{os.getpid()}.log"
    text = f"qdqbench {__version__}: {' '.join(sys.argv)}\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        path.write_text(text, encoding="utf-8")
    except OSError:
        return None
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (``EXIT_CODES``)."""
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "ls": cmd_ls, "validate": cmd_validate, "report": cmd_report, "env": cmd_env,
               "compare": compare.run, "merge": merge.run, "history": history.run, "doctor": doctor.run}[args.command]
    old_handlers = _install_signal_handlers()
    try:
        return handler(args)
    except QdqbenchError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"error: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        # The reader went away (qdqbench ls | head): end quietly, and keep Python's exit-time flush
        # of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    except OSError as exc:  # a file the user named, a full disk: one line naming the file
        where = exc.filename or "qdqbench"
        print(f"error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 — a bug: one line and a log, never a bare traceback
        log = _crash_log(args, exc)
        where = f"; traceback in {log}" if log else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: internal error: {type(exc).__name__}: {first}"
              f"{where}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
