"""Options shared by several commands: ``--shard K/N`` (run, ls) and ``--fail-on EXPR`` (run, compare)."""

from __future__ import annotations

from typing import Literal

from qdqbench.review.gates import EXAMPLES


def add_shard_argument(parser) -> None:
    """Add ``--shard K/N`` to an argparse parser (text; ``run.shard.parse_shard`` gives the one-line error)."""
    parser.add_argument(
        "--shard", metavar="K/N|auto",
        help="run only shard K of N: whole model × task groups, balanced by expected cost "
             "(join the run folders with qdqbench merge); auto: K/N from QDQBENCH_SHARD, a Kubernetes "
             "indexed Job (JOB_COMPLETION_INDEX + QDQBENCH_SHARD_COUNT) or a Slurm array",
    )


def add_fail_on_argument(parser, context: Literal["run", "compare"]) -> None:
    """Add a repeatable ``--fail-on EXPR`` option to an argparse parser (``review.gates`` parses it)."""
    kinds = "accuracy-drop>1%%, failed-cells>0" if context == "run" else EXAMPLES.replace("%", "%%")
    parser.add_argument(
        "--fail-on", dest="fail_on", action="append", default=[], metavar="EXPR",
        help=f"exit 1 when a gate fails (repeatable; quote it in a shell), e.g. {kinds}",
    )
