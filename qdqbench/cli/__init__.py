"""The ``qdqbench`` command: argument parsing, exit codes and the mapping of outcomes to them.

The only top layer: it imports every other package, and nothing imports it (docs/ARCHITECTURE.md).
"""

from qdqbench.cli.main import EXIT_CODES, main

__all__ = ["EXIT_CODES", "main"]
