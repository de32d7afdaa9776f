"""Suites as data: the pydantic schema, YAML loading with ``--set`` overrides, and the expansion of
a suite into the cells of its matrix. No torch, no engine runtime (docs/ARCHITECTURE.md)."""
