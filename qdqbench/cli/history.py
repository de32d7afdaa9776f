"""``qdqbench history ingest RUN_DIR... --db FILE`` and ``qdqbench history report --db FILE --out DIR``.

``review.history`` does the work; exit codes (``cli.exits``): 0 done, 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qdqbench.cli.exits import EXIT_OK
from qdqbench.core.errors import QdqbenchError
from qdqbench.review.history import ingest, write_history_report


def add_parser(subparsers) -> None:
    """Register ``qdqbench history ingest|report``."""
    p = subparsers.add_parser("history", help="keep results across runs in SQLite; trend charts")
    sub = p.add_subparsers(dest="history_command", required=True, metavar="ACTION")
    ing = sub.add_parser("ingest", help="add run folders to the database (idempotent)")
    ing.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    ing.add_argument("--db", type=Path, required=True, metavar="FILE", help="SQLite file (created if missing)")
    rep = sub.add_parser("report", help="write history.html and history.csv with trend charts")
    rep.add_argument("--db", type=Path, required=True, metavar="FILE")
    rep.add_argument("--out", type=Path, required=True, metavar="DIR")
    rep.add_argument("--last", type=int, metavar="N", help="only the latest N runs")


def run(args) -> int:
    """Run ``qdqbench history``; returns the exit code."""
    if args.history_command == "ingest":
        for res in ingest(args.db, args.run_dirs):
            what = "replaced" if res.replaced else "added"
            skipped = (f" ({res.skipped_lines} line{'' if res.skipped_lines == 1 else 's'} of results.jsonl "
                       "skipped: see the warnings above)") if res.skipped_lines else ""
            print(f"{what} {res.run_id}: {res.cells} cells, {res.metrics} metrics{skipped}", file=sys.stderr)
        return EXIT_OK
    if args.last is not None and args.last < 1:
        raise QdqbenchError(f"history report: --last must be at least 1 (got {args.last})")
    for p in write_history_report(args.db, args.out, args.last):
        print(p)
    return EXIT_OK
