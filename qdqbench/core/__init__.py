"""The bottom layer: result records and their store, verdicts, statistics, errors, run-folder locks,
machine facts and the one atomic writer. Imports nothing of qdqbench above it and never torch
(docs/ARCHITECTURE.md)."""
