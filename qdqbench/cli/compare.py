"""``qdqbench compare BASE CAND [--out DIR] [--fail-on EXPR ...] [--force]``.

The comparison is ``review.comparison``, its gates ``review.gates``, the files it writes
``review.compare``; this module parses the arguments, prints what was found and maps the outcome
to an exit code (``cli.exits``): 0 gates pass, 1 a gate failed, 2 bad input or nothing comparable
(no cell in both runs, or a gate checked on 0 cells), 3 no gate failed but CAND has failed cells.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qdqbench.cli.exits import EXIT_CELLS, EXIT_GATE, EXIT_INPUT, EXIT_OK
from qdqbench.cli.options import add_fail_on_argument
from qdqbench.review.compare import write_comparison
from qdqbench.review.comparison import compare_runs
from qdqbench.review.gates import check_compare_gates, format_outcomes, parse_gates


def add_parser(subparsers) -> None:
    """Register ``qdqbench compare``."""
    p = subparsers.add_parser(
        "compare", help="compare two run folders: deltas, significance, environment, gates",
        description="Compare CAND against BASE cell by cell. Exit codes: 0 gates pass, 1 a gate "
                    "failed, 2 bad input or nothing comparable (no cell in both runs, or a gate "
                    "checked on 0 cells), 3 no gate failed but CAND has failed cells.")
    p.add_argument("base", type=Path, metavar="BASE", help="the reference run folder")
    p.add_argument("cand", type=Path, metavar="CAND", help="the candidate run folder")
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write compare.html/.md/.json (default: CAND)")
    add_fail_on_argument(p, "compare")
    p.add_argument("--force", action="store_true",
                   help="gate latency even where the machines or runtimes differ")


def run(args) -> int:
    """Run ``qdqbench compare``; returns the exit code."""
    gates = parse_gates(args.fail_on, "compare")  # bad expressions fail before any work
    c = compare_runs(args.base, args.cand, force=args.force)
    outcomes = check_compare_gates(c, gates)
    paths = write_comparison(c, outcomes, args.out or args.cand)
    err = sys.stderr
    print(f"compared {len(c.cells)} matched cells ({len(c.only_base)} only in BASE, "
          f"{len(c.only_cand)} only in CAND)", file=err)
    for line in c.partial_runs():
        print(f"warning: {line}", file=err)
    for backend, reason in c.incomparable_backends.items():
        action = "gated anyway (--force)" if c.force else "not gated"
        print(f"warning: {backend} latency not comparable: {reason}; {action}", file=err)
    for line in format_outcomes(outcomes):
        print(line, file=err)
    for p in paths:
        print(p)
    nothing = c.nothing_comparable()
    if nothing is not None:  # before gates: over no common cell, no verdict means anything
        print(f"error: compare: {nothing}", file=err)
        return EXIT_INPUT
    if any(o.status == "failed" for o in outcomes):
        return EXIT_GATE
    unchecked = [o for o in outcomes if o.not_checked]
    if unchecked:
        for o in unchecked:
            print(f"error: compare: nothing comparable for gate {o.gate.text}: {o.why_not_checked()}", file=err)
        return EXIT_INPUT
    if c.cand_failed:
        print(f"{len(c.cand_failed)} cells failed in CAND", file=err)
        return EXIT_CELLS
    return EXIT_OK
