"""The ``qdqbench`` command: run | ls | validate | report | compare | merge | history | env.

Thin: it parses arguments, calls the library and maps outcomes to exit codes:
0 everything ok · 1 a ``--fail-on`` gate failed · 2 usage or input error (one line per problem) ·
3 some cells failed · 130 interrupted (the run folder resumes with ``qdqbench run --resume DIR``).
``ls``, ``validate``, ``compare``, ``merge`` and ``history`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qdqbench import __version__, compare, history, merge
from qdqbench.errors import QdqbenchError
from qdqbench.gates import add_fail_on_argument
from qdqbench.shard import add_shard_argument

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_CELLS = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qdqbench", description="INT8 (Q/DQ) BERT accuracy and speed, side by side with fp32.")
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
    run.add_argument("--resume", type=Path, metavar="DIR", help="resume an interrupted run folder (skips finished cells)")
    run.add_argument("--out", type=Path, metavar="DIR", help="parent folder for the run folder (default: the suite's output.dir)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_shard_argument(run)
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
    sub.add_parser("env", help="print versions, CPU/GPU and git facts as JSON")
    return p


def _load(args):
    from qdqbench.suite import load_suite, parse_model_path

    model_paths = dict(parse_model_path(x) for x in args.model_path)
    return load_suite(args.suite, args.sets, model_paths, args.data_dir)


def preflight(suite, *, fetch: bool = False) -> list[str]:
    """Problems knowable before heavy work: model sources, task names, data folders.

    With ``fetch``, Hub models are downloaded (or found in the cache) now, so an unreachable Hub
    stops the run before anything is computed.
    """
    from qdqbench import models
    from qdqbench.tasks import get_task

    problems = []
    for name, spec in suite.models.items():
        p = models.check(name, spec, fetch=fetch)
        if p:
            problems.append(p)
    for tname, t in suite.tasks.items():
        if t.kind == "embedding-fidelity":
            continue
        try:
            task = get_task(t.name or ("squad" if t.kind == "squad" else tname))
        except QdqbenchError as exc:
            problems.append(f"tasks.{tname}: {exc}")
            continue
        if (getattr(task, "kind", "") == "qa") != (t.kind == "squad"):
            problems.append(f"tasks.{tname}: task '{task.name}' does not match kind '{t.kind}'")
        elif t.data_dir and not Path(t.data_dir).is_dir():
            problems.append(f"tasks.{tname}.data_dir: {t.data_dir} does not exist")
        elif t.data_dir and t.kind == "glue" and not (Path(t.data_dir) / task.glue_dir).is_dir() \
                and not (Path(t.data_dir) / "glue" / task.glue_dir).is_dir():
            problems.append(f"tasks.{tname}.data_dir: {t.data_dir} has no {task.glue_dir}/ folder")
    return problems


def _cells(suite, shard: str | None):
    from qdqbench.shard import parse_shard, shard_cells
    from qdqbench.suite import expand

    cells = expand(suite)
    if not shard:
        return cells, None
    k, n = parse_shard(shard)
    return shard_cells(cells, k, n, suite), (k, n)


def cmd_ls(args) -> int:
    suite = _load(args)
    cells, _ = _cells(suite, args.shard)
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
    from qdqbench.suite import expand

    print(f"{args.suite}: ok ({len(expand(suite))} cells)")
    return EXIT_OK


def cmd_run(args) -> int:
    from rich.console import Console

    from qdqbench.gates import check_gates, parse_gates
    from qdqbench.results import load_run_info
    from qdqbench.runner import Runner, load_run_suite, new_run_dir

    console = Console(stderr=True)
    gates = parse_gates(args.fail_on, "run")
    if args.resume:
        if args.suite or args.sets or args.model_path or args.data_dir or args.shard:
            raise QdqbenchError("--resume takes the suite and shard stored in the run folder; give no suite or overrides")
        suite, run_dir, suite_path = load_run_suite(args.resume), args.resume, None
        shard = load_run_info(run_dir).get("shard")
        shard_text = f"{shard['index']}/{shard['count']}" if shard else None
    else:
        if args.suite is None:
            raise QdqbenchError("run: give a suite file, or --resume DIR")
        suite, suite_path, shard_text = _load(args), args.suite, args.shard
    cells, shard = _cells(suite, shard_text)
    if not args.resume:
        run_dir = new_run_dir(suite, args.out, shard)
    problems = preflight(suite, fetch=True)
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        return EXIT_INPUT
    console.print(f"run folder: {run_dir}")
    summary = Runner(suite, run_dir, suite_path=suite_path, console=console, show_progress=not args.quiet,
                     cells=cells, shard=shard).run()
    paths = _write_report(run_dir, suite.output.formats, console)
    _print_summary(summary, console)
    if summary.interrupted:
        console.print(f"[yellow]interrupted[/yellow]: resume with  qdqbench run --resume {run_dir}")
    if paths:
        console.print(f"report: {paths[0]}")
    print(run_dir)
    failed_gates = [f for o in check_gates(summary.records, gates) for f in o.failures]
    for f in failed_gates:
        console.print(f"[red]gate failed[/red]: {f}")
    if summary.interrupted:
        return summary.exit_code
    return EXIT_GATE if failed_gates else summary.exit_code


def _write_report(run_dir: Path, formats, console) -> list[Path]:
    from qdqbench.report import write_report

    try:
        return write_report(Path(run_dir), tuple(formats))
    except Exception as exc:  # noqa: BLE001 — a report bug must not lose the run; the data is on disk
        console.print(f"[red]report failed[/red]: {type(exc).__name__}: {exc} (results are in {run_dir}/results.jsonl)")
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
        m = r.metric(r.details.get("primary_metric", ""))
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
    paths = _write_report(args.run_dir, tuple(args.formats or ("html", "md", "csv")), Console(stderr=True))
    for p in paths:
        print(p)
    return EXIT_OK if paths else EXIT_INPUT


def cmd_env(args) -> int:
    from qdqbench.env import environment

    print(json.dumps(environment(), indent=2))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    handler = {"run": cmd_run, "ls": cmd_ls, "validate": cmd_validate, "report": cmd_report, "env": cmd_env,
               "compare": compare.run, "merge": merge.run, "history": history.run}[args.command]
    try:
        return handler(args)
    except QdqbenchError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
