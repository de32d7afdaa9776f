"""``qdqbench doctor [SUITE] [--engine NAME ...] [--json] [--timeout S]`` (``run.doctor`` does the checks).

Exit codes (``cli.exits``): 0 when no engine FAILs (with a suite: every engine the suite needs
passed), 2 otherwise or on bad input. Importing this module imports neither torch nor a runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

from qdqbench.cli.exits import EXIT_INPUT, EXIT_OK
from qdqbench.core.errors import QdqbenchError, did_you_mean
from qdqbench.run.doctor import (
    AGREEMENT_DB,
    BATCH,
    DEFAULT_TIMEOUT_S,
    SEQ,
    EngineResult,
    check_engines,
    format_line,
    known_engines,
    machine_facts,
    passed,
    suite_engines,
    summary_line,
)


def exit_code(results: list[EngineResult]) -> int:
    """0 when no engine failed, else 2."""
    return EXIT_OK if passed(results) else EXIT_INPUT


def add_parser(subparsers) -> None:
    """Register ``qdqbench doctor``."""
    p = subparsers.add_parser(
        "doctor", help="check that each engine (of a suite) builds and runs a tiny INT8 Q/DQ BERT here",
        description="Build a tiny random Q/DQ BERT, then per engine, each in its own process: prepare it, "
                    f"compare one inference with the torch fake-quant model (SQNR >= {AGREEMENT_DB:g} dB) "
                    "and time it briefly. One line per engine. Exit codes: 0 every engine "
                    "(the suite needs) passed, 2 otherwise or bad input.")
    p.add_argument("suite", type=Path, nargs="?", help="suite YAML: check the engines it needs "
                   "(default: every engine qdqbench knows; missing ones are skipped)")
    p.add_argument("--engine", dest="engines", action="append", default=[], metavar="NAME",
                   help="check only this engine (repeatable; e.g. onnxruntime@trt, torch-cuda)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds per engine check (default {DEFAULT_TIMEOUT_S:g})")


def run(args) -> int:
    """Run ``qdqbench doctor``; returns the exit code."""
    suite_name = None
    if args.suite is not None:
        from qdqbench.config.suite import load_suite

        suite = load_suite(args.suite)
        engines = suite_engines(suite)
        suite_name = str(args.suite)
    else:
        engines = [(e, False) for e in known_engines()]
    if args.engines:
        known = known_engines()
        for e in args.engines:
            if e not in known:
                raise QdqbenchError(f"doctor: unknown engine '{e}'{did_you_mean(e, known)}; "
                                    f"known: {', '.join(known)}")
        needed = dict(engines)  # an engine the suite does not name is checked, not required
        engines = [(e, needed.get(e, False)) for e in args.engines]
    machine = machine_facts()
    if not args.json:
        print(f"# qdqbench doctor: {machine['summary']}", flush=True)
    results = check_engines(engines, timeout_s=args.timeout,
                            on_result=None if args.json else lambda r: print(format_line(r), flush=True))
    code = exit_code(results)
    if args.json:
        print(json.dumps({"suite": suite_name, "exit_code": code, "ok": code == EXIT_OK,
                          "agreement_threshold_db": AGREEMENT_DB, "shape": {"batch": BATCH, "seq": SEQ},
                          "machine": machine, "engines": [r.to_dict() for r in results]},
                         indent=2, default=str))
    else:
        print(summary_line(results, suite_name), flush=True)
    return code
