"""Two run folders side by side: matched cells, direction-aware deltas, significance, environment.

``compare_runs(BASE, CAND)`` matches records by their stable ``cell`` id and, for every metric
both runs have, keeps BASE, CAND and the delta with whether it is better or worse (each metric
says which direction is better) and whether it is significant:

* accuracy, fidelity and other metrics with stored confidence intervals: significant when the two
  runs' intervals do not overlap (conservative: both runs score the same examples). For a
  quantized accuracy cell the stored paired interval of its drop against fp32 is compared the
  same way (pseudo-metric ``verdict_drop``).
* latency and throughput: significant when the mean moved by more than two standard errors of
  the difference of two means, ``|Δmean| > 2·sqrt(std_b²/n_b + std_c²/n_c)`` with the stored
  ``latency_std_ms`` and ``details.iterations`` (a two-sided z-test at about 95%). The shift of
  the mean stands for the whole distribution, percentiles included; unknown (and so not used to
  excuse a regression) when a run lacks the spread or the count.

Latency is only comparable on the same machine and runtime: ``LATENCY_FACTS`` names, per backend,
the ``run.json`` facts (CPU, GPU, threads, driver, runtime versions) whose difference makes that
backend's latency deltas incomparable. The report says so, and gates skip those cells unless
``--force``. Every other difference (python, transformers, commit) is listed for the reader.

This module is the comparison model only: ``gates`` checks it, ``compare`` writes it
(compare.html, compare.md, compare.json) and ``qdqbench compare`` (``cli.compare``) runs it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdqbench.core.env import node_label
from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import (
    Metric,
    Record,
    SkippedLine,
    load_records,
    load_run_info,
    warn_skipped,
)
from qdqbench.core.stats import LATENCY_Z, intervals_disjoint, latency_differs

# run.json facts whose difference makes latency incomparable: "*" for every backend, then per
# backend. A CPU engine is sensitive to the CPU model, core count and thread count; a GPU engine
# to the GPU, driver and CUDA; every engine to its own runtime's version.
LATENCY_FACTS: Mapping[str, tuple[str, ...]] = {
    "*": ("machine.cpu", "machine.cores", "machine.gpu", "timing.threads_used"),
    "tensorrt": ("versions.tensorrt", "machine.driver", "machine.cuda"),
    "onnxruntime": ("versions.onnxruntime", "versions.onnxruntime-gpu", "machine.driver", "machine.cuda"),
    "openvino": ("versions.openvino",),
    "torch": ("versions.torch", "machine.driver", "machine.cuda"),
}
# Sections of run.json listed in the environment table.
ENV_SECTIONS = ("versions", "machine", "git", "timing", "accuracy_bound")
# Latency statistics compared (and the significance rule applies to all of them).
LATENCY_COMPARED = ("latency_mean_ms", "latency_median_ms", "latency_p90_ms", "latency_p95_ms",
                    "latency_p99_ms", "latency_min_ms", "latency_max_ms", "throughput")
Z = LATENCY_Z  # standard errors for latency significance (≈ 95% two-sided)

SIGNIFICANCE_RULES = {
    "ci": "significant when the two runs' confidence intervals do not overlap",
    "latency": (f"significant when |Δmean| > {Z:g}·sqrt(std_BASE²/n_BASE + std_CAND²/n_CAND) "
                "(stored std and timed iterations; the mean's shift stands for every statistic)"),
}


# ----------------------------------------------------------------------------------------------
# the comparison


@dataclass(frozen=True)
class MetricDelta:
    """One metric in both runs: values, intervals, delta, direction and significance."""

    name: str
    unit: str
    higher_is_better: bool | None
    base: float | None
    cand: float | None
    base_ci: tuple[float, float] | None = None
    cand_ci: tuple[float, float] | None = None
    significant: bool | None = None  # None: not known (no intervals, no spread)
    rule: str | None = None  # key of SIGNIFICANCE_RULES

    @property
    def delta(self) -> float | None:
        """CAND − BASE."""
        if self.base is None or self.cand is None:
            return None
        if not (math.isfinite(self.base) and math.isfinite(self.cand)):
            return 0.0 if self.base == self.cand else None
        return self.cand - self.base

    @property
    def relative(self) -> float | None:
        """(CAND − BASE) / |BASE|, or None when BASE is 0 or unknown."""
        d = self.delta
        if d is None or not self.base:
            return None
        return d / abs(self.base)

    @property
    def direction(self) -> str | None:
        """'better', 'worse', 'same', or None (direction unknown or a value missing)."""
        d = self.delta
        if d is None:
            return None
        if d == 0:
            return "same"
        if self.higher_is_better is None:
            return None
        return "better" if (d > 0) == self.higher_is_better else "worse"


@dataclass(frozen=True)
class CellDelta:
    """One cell present in both runs (ok or not), with its metric deltas."""

    cell: str
    base: Record
    cand: Record
    metrics: tuple[MetricDelta, ...]
    primary: str | None  # primary metric of an accuracy cell

    def metric(self, name: str) -> MetricDelta | None:
        """The delta of the metric called ``name``, or None."""
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def kind(self) -> str:
        """The cell's kind (accuracy, latency, ...)."""
        return self.cand.kind

    @property
    def backend(self) -> str:
        """The cell's backend."""
        return self.cand.backend

    @property
    def both_ok(self) -> bool:
        """Whether the cell finished in both runs."""
        return self.base.status == "ok" and self.cand.status == "ok"

    @property
    def status_changed(self) -> bool:
        """Whether the cell's status differs between the runs."""
        return self.base.status != self.cand.status


@dataclass(frozen=True)
class EnvDifference:
    """One ``run.json`` fact that differs; ``affects`` lists the backends whose latency it spoils."""

    key: str
    base: str | None
    cand: str | None
    affects: tuple[str, ...] = ()  # "*" for every backend


@dataclass(frozen=True)
class Comparison:
    """BASE and CAND: matched cells, cells only in one run, and environment differences."""

    base_name: str
    cand_name: str
    base_info: Mapping[str, Any]
    cand_info: Mapping[str, Any]
    base_records: tuple[Record, ...]
    cand_records: tuple[Record, ...]
    cells: tuple[CellDelta, ...]
    only_base: tuple[Record, ...]
    only_cand: tuple[Record, ...]
    environment: tuple[EnvDifference, ...]
    force: bool = False
    base_dir: Path | None = None  # the run folders, when loaded from disk
    cand_dir: Path | None = None
    skipped_lines: tuple[SkippedLine, ...] = ()  # lines of either results.jsonl that were not read

    def nothing_comparable(self) -> str | None:
        """Why the two runs cannot be compared at all (no cell id in both), or None."""
        if self.cells:
            return None
        base = str(self.base_dir) if self.base_dir is not None else self.base_name
        cand = str(self.cand_dir) if self.cand_dir is not None else self.cand_name
        return (f"nothing comparable: no cell is in both runs (BASE {base}: "
                f"{_cells(len(self.base_records))}; CAND {cand}: {_cells(len(self.cand_records))})")

    def partial_runs(self) -> list[str]:
        """One line per side that is a partial merge (``merge --partial``): it lacks shards."""
        out = []
        for side, info in (("BASE", self.base_info), ("CAND", self.cand_info)):
            p = info.get("partial")
            if p is None:
                continue
            reasons = p.get("reasons") if isinstance(p, Mapping) else None
            why = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) and reasons else "shards missing"
            out.append(f"{side} is a partial merge ({why}): the cells it lacks are not compared")
        return out

    def latency_incomparable(self, backend: str) -> str | None:
        """Why latency on ``backend`` cannot be compared between the runs, or None."""
        if not self.base_info or not self.cand_info:
            side = "BASE" if not self.base_info else "CAND"
            return f"{side} has no run.json: its machine is unknown"
        from qdqbench.engines import split_backend

        nodes = self._latency_nodes(backend)
        if nodes is not None:
            return nodes
        engine = split_backend(backend)[0]  # "tensorrt@fp16" depends on what "tensorrt" does
        keys = [d for d in self.environment if "*" in d.affects or engine in d.affects]
        if not keys:
            return None
        return "; ".join(f"{d.key} {d.base or '—'} vs {d.cand or '—'}" for d in keys[:3]) + (
            f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    def _latency_nodes(self, backend: str) -> str | None:
        """Why ``backend``'s latency cells ran on different nodes in the two runs, or None.

        A distributed run records ``details.node`` per cell (run.json describes only the driver's
        machine); a cell timed on another node is a different machine, as compare treats one.
        """
        def node(r: Record) -> str:
            return node_label(r.details.get("node")) or "the run's own machine"

        moved = [(cd.cell, node(cd.base), node(cd.cand)) for cd in self.cells
                 if cd.kind == "latency" and cd.backend == backend and node(cd.base) != node(cd.cand)]
        if not moved:
            return None
        cell, b, c = moved[0]
        more = f" and {len(moved) - 1} more cells" if len(moved) > 1 else ""
        return f"latency measured on different nodes ({cell}: {b} vs {c}{more})"

    @property
    def incomparable_backends(self) -> dict[str, str]:
        """Backend → reason, for the backends with latency cells that cannot be compared."""
        out = {}
        for b in dict.fromkeys(c.backend for c in self.cells if c.kind == "latency"):
            reason = self.latency_incomparable(b)
            if reason:
                out[b] = reason
        return out

    @property
    def cand_failed(self) -> list[Record]:
        """CAND's failed cells."""
        return [r for r in self.cand_records if r.status == "failed"]


def _cells(n: int) -> str:
    return f"{n} cell{'' if n == 1 else 's'}"


def _ci(m: Metric | None) -> tuple[float, float] | None:
    if m is None or m.ci_low is None or m.ci_high is None:
        return None
    return (m.ci_low, m.ci_high)


def _disjoint(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool | None:
    return intervals_disjoint(a, b)


def latency_significant(base: Record, cand: Record) -> bool | None:
    """Whether the mean latency moved by more than Z standard errors; None when unknown."""
    def stats(r: Record) -> tuple[float, float, int] | None:
        mean, std = r.metric("latency_mean_ms"), r.metric("latency_std_ms")
        n = r.details.get("iterations")
        if mean is None or std is None or mean.value is None or std.value is None:
            return None
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            return None
        return mean.value, std.value, n

    return latency_differs(stats(base), stats(cand), Z)


def _metric_deltas(base: Record, cand: Record) -> tuple[MetricDelta, ...]:
    if base.status != "ok" or cand.status != "ok":
        return ()
    out = []
    if cand.kind == "latency":
        sig = latency_significant(base, cand)
        for name in LATENCY_COMPARED:
            b, c = base.metric(name), cand.metric(name)
            if b is None and c is None:
                continue
            ref = c or b
            out.append(MetricDelta(name, ref.unit, ref.higher_is_better, b.value if b else None,
                                   c.value if c else None, significant=sig, rule="latency"))
        # Any other figure of a latency cell (peak / model RSS, load time, GPU memory): compared
        # as stored, with no significance rule (one measurement each, no spread).
        skip = set(LATENCY_COMPARED) | {"latency_std_ms", "cov"}
        others = dict.fromkeys(m.name for m in [*base.metrics, *cand.metrics] if m.name not in skip)
        for name in others:
            b, c = base.metric(name), cand.metric(name)
            ref = c or b
            out.append(MetricDelta(name, ref.unit, ref.higher_is_better, b.value if b else None,
                                   c.value if c else None))
        return tuple(out)
    names = list(dict.fromkeys([m.name for m in base.metrics] + [m.name for m in cand.metrics]))
    for name in names:
        b, c = base.metric(name), cand.metric(name)
        ref = c or b
        bci, cci = _ci(b), _ci(c)
        sig = _disjoint(bci, cci)
        out.append(MetricDelta(name, ref.unit, ref.higher_is_better, b.value if b else None,
                               c.value if c else None, bci, cci, sig, "ci" if sig is not None else None))
    if base.verdict is not None and cand.verdict is not None:
        bv, cv = base.verdict, cand.verdict
        bci = (bv.drop_ci_low, bv.drop_ci_high) if bv.drop_ci_low is not None and bv.drop_ci_high is not None else None
        cci = (cv.drop_ci_low, cv.drop_ci_high) if cv.drop_ci_low is not None and cv.drop_ci_high is not None else None
        sig = _disjoint(bci, cci)
        out.append(MetricDelta("verdict_drop", "ratio", False, bv.drop, cv.drop, bci, cci, sig,
                               "ci" if sig is not None else None))
    return tuple(out)


def _flatten(info: Mapping[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for section in ENV_SECTIONS:
        values = info.get(section)
        if not isinstance(values, Mapping):
            continue
        for k, v in values.items():
            if isinstance(v, (list, tuple)):
                v = ", ".join(str(x) for x in v)
            elif isinstance(v, Mapping):
                v = json.dumps(v, sort_keys=True)
            out[f"{section}.{k}"] = None if v is None else str(v)
    return out


def environment_differences(base_info: Mapping[str, Any], cand_info: Mapping[str, Any]) -> list[EnvDifference]:
    """Every differing ``run.json`` fact, with the backends whose latency it makes incomparable."""
    a, b = _flatten(base_info), _flatten(cand_info)
    out = []
    for key in dict.fromkeys(list(a) + list(b)):
        if a.get(key) == b.get(key):
            continue
        affects = tuple(backend for backend, keys in LATENCY_FACTS.items() if key in keys)
        out.append(EnvDifference(key, a.get(key), b.get(key), affects))
    return out


def build_comparison(base_records: Iterable[Record], base_info: Mapping[str, Any],
                     cand_records: Iterable[Record], cand_info: Mapping[str, Any], *,
                     base_name: str = "BASE", cand_name: str = "CAND", force: bool = False,
                     base_dir: Path | None = None, cand_dir: Path | None = None,
                     skipped_lines: Sequence[SkippedLine] = ()) -> Comparison:
    """Match two runs' records by cell id and compute every delta."""
    base, cand = list(base_records), list(cand_records)
    base_by = {r.cell: r for r in base}
    cand_by = {r.cell: r for r in cand}
    cells = []
    for r in cand:  # CAND's order: the newer run decides how the report reads
        b = base_by.get(r.cell)
        if b is not None:
            cells.append(CellDelta(r.cell, b, r, _metric_deltas(b, r), r.primary_metric or b.primary_metric))
    return Comparison(
        base_name=base_name, cand_name=cand_name, base_info=dict(base_info), cand_info=dict(cand_info),
        base_records=tuple(base), cand_records=tuple(cand), cells=tuple(cells),
        only_base=tuple(r for r in base if r.cell not in cand_by),
        only_cand=tuple(r for r in cand if r.cell not in base_by),
        environment=tuple(environment_differences(base_info, cand_info)), force=force,
        base_dir=base_dir, cand_dir=cand_dir, skipped_lines=tuple(skipped_lines),
    )


def _check_run_dir(path: Path, side: str) -> None:
    if not path.is_dir():
        raise QdqbenchError(f"compare: {side} run folder not found: {path}")
    if not (path / "results.jsonl").is_file():
        raise QdqbenchError(f"compare: {side} is not a run folder (no results.jsonl): {path}")


def compare_runs(base_dir: Path, cand_dir: Path, *, force: bool = False) -> Comparison:
    """Load two run folders and compare them; unreadable result lines are warned about on stderr."""
    base_dir, cand_dir = Path(base_dir), Path(cand_dir)
    _check_run_dir(base_dir, "BASE")
    _check_run_dir(cand_dir, "CAND")
    base_info, cand_info = load_run_info(base_dir), load_run_info(cand_dir)
    skipped: list[SkippedLine] = []
    base_records = load_records(base_dir, on_skip=skipped.extend)
    cand_records = load_records(cand_dir, on_skip=skipped.extend)
    warn_skipped(skipped)
    return build_comparison(
        base_records, base_info, cand_records, cand_info,
        base_name=str(base_info.get("run_id") or base_dir.name),
        cand_name=str(cand_info.get("run_id") or cand_dir.name), force=force,
        base_dir=base_dir, cand_dir=cand_dir, skipped_lines=skipped,
    )
