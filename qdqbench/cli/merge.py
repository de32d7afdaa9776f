"""``qdqbench merge RUN_DIR... --out DIR [--force] [--partial] [--no-report]`` (``run.merge`` does the work).

Exit codes (``cli.exits``): 0 merged; 2 refused (a ``QdqbenchError``, one line) or bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qdqbench.cli.exits import EXIT_OK
from qdqbench.run.merge import merge_runs


def add_parser(subparsers) -> None:
    """Register ``qdqbench merge``."""
    p = subparsers.add_parser(
        "merge", help="join shard run folders (run --shard K/N) into one run folder",
        description="Exit codes: 0 merged, 2 refused (different suite or code, conflicting cells "
                    "or artifacts: --force overrides; missing, mixed or unfinished shards: "
                    "--partial overrides) or bad input.")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the merged run folder (new or empty)")
    p.add_argument("--force", action="store_true",
                   help="merge different suites or code, and resolve conflicting cells "
                        "(ok over failed, then the later folder)")
    p.add_argument("--partial", action="store_true",
                   help="merge an incomplete shard set (missing, mixed-count or unfinished shards); "
                        "the merged run.json and report say what is missing")
    p.add_argument("--no-report", action="store_true", help="do not render report.html/.md/.csv")


def run(args) -> int:
    """Run ``qdqbench merge``; returns the exit code."""
    res = merge_runs(args.run_dirs, args.out, force=args.force, partial=getattr(args, "partial", False))
    for note in res.notes:
        if not note.startswith("skipped: "):  # already warned about, line by line
            print(f"note: {note}", file=sys.stderr)
    if res.partial is not None:
        print(f"warning: partial merge: {'; '.join(res.partial['reasons'])}: the merged run does not "
              "cover the whole suite", file=sys.stderr)
    print(f"merged {res.runs} run folders: {res.cells} cells, {res.artifacts} artifact files", file=sys.stderr)
    if not args.no_report:
        from qdqbench.report import write_report

        try:
            write_report(res.out_dir)
        except Exception as exc:  # noqa: BLE001 — the merged data is on disk; the report can be redone
            print(f"warning: report failed: {type(exc).__name__}: {exc} (qdqbench report {res.out_dir})",
                  file=sys.stderr)
    print(res.out_dir)
    return EXIT_OK
