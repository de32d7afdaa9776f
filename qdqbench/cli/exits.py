"""The exit codes of every ``qdqbench`` command, in one place (README's table is written from it).

1 means only "a gate failed"; bad input, a damaged or busy run folder, a full disk and nothing
comparable are one line and 2; some failed cells (and no failed gate) are 3; a bug is 70 with its
traceback in a log file; a signal N is 128+N with the resume hint. The library returns outcomes
(gate outcomes, a comparison, doctor's engine results); the command modules of ``cli`` map them
to these codes.
"""

from __future__ import annotations

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_CELLS, EXIT_INTERNAL, EXIT_PIPE = 0, 1, 2, 3, 70, 141
EXIT_CODES = {
    EXIT_OK: "everything ran and every gate passed",
    EXIT_GATE: "a --fail-on gate failed (and nothing else: 1 means only this)",
    EXIT_INPUT: "bad input, a damaged or busy run folder, a full disk, nothing comparable; one line each",
    EXIT_CELLS: "some cells failed (each recorded with its one-line error); no gate failed",
    EXIT_INTERNAL: "internal error (a bug): the traceback is in qdqbench-error-*.log, named on stderr",
    130: "interrupted by SIGINT (Ctrl-C); qdqbench run --resume DIR goes on",
    143: "stopped by SIGTERM; qdqbench run --resume DIR goes on",
    129: "stopped by SIGHUP (the terminal closed); qdqbench run --resume DIR goes on",
    EXIT_PIPE: "stdout was closed by its reader (qdqbench ls | head); ends quietly",
}
