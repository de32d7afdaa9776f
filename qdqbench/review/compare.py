"""Write a comparison of two run folders: compare.html (self-contained), compare.md, compare.json.

The comparison itself (matched cells, deltas, significance, environment) is ``comparison``; the
gates checked on it are ``gates``; ``qdqbench compare BASE CAND [--out DIR] [--fail-on EXPR ...]
[--force]`` (``cli.compare``) writes these files into DIR (default: CAND) and exits 0 (gates
pass), 1 (a gate failed), 2 (bad input, or nothing comparable) or 3 (no gate failed, but CAND has
failed cells). Nothing comparable is never a pass: two runs with no cell id in common exit 2
("nothing comparable", naming both folders and their cell counts), with or without gates, and so
does a gate checked on 0 cells ("nothing comparable for gate X": no cell of the kind it needs, or
every such cell skipped) unless another gate failed (then 1). Lines of ``results.jsonl`` that
could not be read are warned about on stderr and listed at the top of compare.html / compare.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qdqbench.core.results import Record, write_text_atomic
from qdqbench.review.comparison import SIGNIFICANCE_RULES, Comparison
from qdqbench.review.gates import GateOutcome
from qdqbench.review.render_html import render_compare_html
from qdqbench.review.render_md import render_compare_markdown

# ----------------------------------------------------------------------------------------------
# the JSON summary


def _finite(x: float | None) -> float | None | str:
    if x is None or math.isfinite(x):
        return x
    return str(x)  # inf / nan as strings: strict JSON has no such numbers


def _gate_json(o: GateOutcome) -> dict[str, Any]:
    def items(fs):
        return [{"cell": f.cell, "message": f.message} for f in fs]

    return {"gate": o.gate.text, "description": o.gate.describe(), "status": o.status,
            "passed": o.passed, "checked": o.checked,
            "not_checked_reason": o.why_not_checked() if o.not_checked else None,
            "failures": items(o.failures), "skipped": items(o.skipped),
            "within_noise": items(o.within_noise)}


def summary_json(c: Comparison, outcomes: Sequence[GateOutcome] = ()) -> dict[str, Any]:
    """The comparison as plain JSON (what compare.json holds)."""
    def side(name: str, info: Mapping[str, Any], records: Sequence[Record]) -> dict[str, Any]:
        git = info.get("git") if isinstance(info.get("git"), Mapping) else {}
        return {"run_id": name, "started_at": info.get("started_at"), "commit": git.get("commit"),
                "cells": len(records), "failed": sum(r.status == "failed" for r in records)}

    cells = []
    for cd in c.cells:
        cells.append({
            "cell": cd.cell, "kind": cd.kind, "backend": cd.backend,
            "status": {"base": cd.base.status, "cand": cd.cand.status},
            "primary_metric": cd.primary,
            "latency_comparable": (c.latency_incomparable(cd.backend) is None) if cd.kind == "latency" else None,
            "verdict": {"base": cd.base.verdict.passed if cd.base.verdict else None,
                        "cand": cd.cand.verdict.passed if cd.cand.verdict else None},
            "metrics": [{"name": m.name, "unit": m.unit, "higher_is_better": m.higher_is_better,
                         "base": _finite(m.base), "cand": _finite(m.cand), "delta": _finite(m.delta),
                         "relative": _finite(m.relative), "direction": m.direction,
                         "significant": m.significant} for m in cd.metrics],
        })
    nothing = c.nothing_comparable()
    return {
        "schema_version": 1,
        "base": side(c.base_name, c.base_info, c.base_records),
        "cand": side(c.cand_name, c.cand_info, c.cand_records),
        # Not a pass when nothing was comparable, or a gate was checked on 0 cells.
        "passed": nothing is None and all(o.passed for o in outcomes),
        "nothing_comparable": nothing,
        "partial_runs": c.partial_runs(),
        "gates": [_gate_json(o) for o in outcomes],
        "skipped_lines": [{"path": str(s.path), "line": s.line, "reason": s.reason} for s in c.skipped_lines],
        "forced": c.force,
        "environment": [{"key": d.key, "base": d.base, "cand": d.cand, "affects_latency": list(d.affects)}
                        for d in c.environment],
        "latency_incomparable": c.incomparable_backends,
        "significance_rules": SIGNIFICANCE_RULES,
        "cells": cells,
        "only_in_base": [r.cell for r in c.only_base],
        "only_in_cand": [r.cell for r in c.only_cand],
    }


def write_comparison(c: Comparison, outcomes: Sequence[GateOutcome], out_dir: Path) -> list[Path]:
    """Write compare.html, compare.md and compare.json into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "compare.html": render_compare_html(c, outcomes),
        "compare.md": render_compare_markdown(c, outcomes),
        "compare.json": json.dumps(summary_json(c, outcomes), indent=2, default=str) + "\n",
    }
    paths = []
    for name, text in files.items():
        path = out_dir / name
        write_text_atomic(path, text)
        paths.append(path)
    return paths
