"""Running a suite: preflight checks, the pipeline over cells (resume, error boundary), shards and
merge, and ``doctor``'s end-to-end engine check (docs/ARCHITECTURE.md)."""
