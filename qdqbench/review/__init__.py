"""Judging runs after the fact: compare two run folders, gates on one run or a comparison, and the
SQLite history of runs (docs/ARCHITECTURE.md)."""
