"""``python -m qdqbench.cli``: the same as the ``qdqbench`` command."""

import sys

from qdqbench.cli.main import main

sys.exit(main())
