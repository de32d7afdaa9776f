"""The row types of a report: one frozen dataclass per kind of row, holding numbers as stored.

``rows.build_report`` builds them from the records of a run (``rows.Report`` holds them, with the
views of ``views`` and ``layers``, which read these rows too); renderers only lay them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qdqbench.config.suite import PEER_SCHEME_KINDS

LATENCY_METRICS = (
    "latency_mean_ms",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_min_ms",
    "latency_max_ms",
    "latency_std_ms",
    "cov",
    "throughput",
)

def is_peer_kind(scheme_kind: str) -> bool:
    """Whether a scheme kind is a peer tool's recipe (ort-dynamic, ort-static, modelopt)."""
    return scheme_kind in PEER_SCHEME_KINDS


@dataclass(frozen=True)
class PartScore:
    """One part of a split evaluation set (``test``, ``selection``, ``full``) and what it contains."""

    part: str
    contains: str
    examples: int | None
    value: float | None
    drop: float | None
    drop_ci_low: float | None
    drop_ci_high: float | None
    passed: bool | None


@dataclass(frozen=True)
class AccuracyRow:
    """One accuracy cell: its primary metric, the fp32 reference and the stored verdict."""

    anchor: str  # stable slug of the cell, unique within the accuracy rows
    cell: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    backend: str
    precision: str
    metric: str
    value: float | None  # fraction, as stored
    value_ci_low: float | None
    value_ci_high: float | None
    fp32_value: float | None  # the verdict's baseline, or the fp32 row's value
    drop: float | None  # fp32 - value (fraction), from the verdict
    relative_drop: float | None  # drop / fp32, from the verdict
    drop_ci_low: float | None
    drop_ci_high: float | None
    within_noise: bool | None
    changed: int | None  # predictions that differ from fp32
    examples: int | None
    bound: float | None
    bound_mode: str | None
    threshold: float | None
    passed: bool | None  # None: no verdict (fp32 rows)
    other_metrics: tuple[tuple[str, float | None], ...] = ()
    # recipe: auto on a split evaluation set: the test part (the verdict, which value/drop above
    # are), the selection part it chose on and the full set, as stored in details.evaluation_parts.
    parts: tuple[PartScore, ...] = ()
    # Any other scheme in a suite with such an auto scheme: its score on that same test part
    # (details.test_part), so auto's verdict can be compared with each alternative; not a verdict.
    test_part: PartScore | None = None
    test_part_of: str | None = None  # the recipe: auto scheme whose test part it is

    @property
    def is_quantized(self) -> bool:
        """Whether this row is a quantized scheme (not the fp32 reference)."""
        return self.scheme_kind != "fp32"

    @property
    def is_peer(self) -> bool:
        """A peer tool's recipe, not a QDQBERT scheme."""
        return is_peer_kind(self.scheme_kind)


@dataclass(frozen=True)
class FidelityRow:
    """One fidelity cell: INT8 against fp32 sentence embeddings."""

    anchor: str
    cell: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    backend: str
    precision: str
    cosine_mean: float | None
    cosine_min: float | None
    sqnr_db: float | None
    nn_agreement: float | None
    examples: int | None
    reference: str | None
    passed: bool | None = None  # only when the record carries a verdict


@dataclass(frozen=True)
class LatencyRow:
    """One latency cell with its speedup against the same run's fp32 baseline."""

    anchor: str
    cell: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    backend: str
    precision: str
    batch: int | None
    seq: int | None
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    min_ms: float | None
    max_ms: float | None
    std_ms: float | None
    cov: float | None
    throughput: float | None  # sequences per second
    iterations: int | None
    warmup_iters: int | None
    threads: int | None
    method: str | None
    info: Mapping[str, Any] = field(default_factory=dict)
    # For an fp32 row timed in several engine configurations: the one reported (the fastest).
    fp32_config: str | None = None
    baseline_scheme: str | None = None  # the fp32 scheme this row is compared with
    baseline_mean_ms: float | None = None
    baseline_throughput: float | None = None
    is_baseline: bool = False
    speedup_latency: float | None = None  # baseline mean / mean
    speedup_throughput: float | None = None  # throughput / baseline throughput
    # Resources of the worker process (engines.resources): peak RSS, the model's share of it over
    # the worker's baseline, prepare() seconds, and on CUDA the GPU memory figure.
    peak_rss_mb: float | None = None
    model_rss_mb: float | None = None
    load_s: float | None = None
    peak_gpu_mem_mb: float | None = None
    x_floor: float | None = None  # mean over the engine's GEMM floor (timing.floor; report/timeshare.py)
    energy_j: float | None = None  # joules per inference where NVML / RAPL measured it

    @property
    def is_peer(self) -> bool:
        """A peer tool's recipe, not a QDQBERT scheme."""
        return is_peer_kind(self.scheme_kind)


@dataclass(frozen=True)
class ExportRow:
    """One ONNX export cell."""

    anchor: str
    cell: str
    model: str
    task: str
    scheme: str
    onnx_mb: float | None
    qdq_nodes: int | None
    path: str | None
    size_ratio: float | None = None  # onnx_mb over the fp32 export of the same model and task


@dataclass(frozen=True)
class FailedRow:
    """A cell that did not finish (failed) or did not run (skipped), with its one-line error."""

    anchor: str
    cell: str
    status: str
    model: str
    task: str
    scheme: str
    backend: str
    kind: str
    error: str


@dataclass(frozen=True)
class EnvRow:
    """One line of the environment table: section, key, value."""

    section: str
    key: str
    value: str


@dataclass(frozen=True)
class MethodRow:
    """How one backend was timed: the method and iteration counts its latency cells report."""

    backend: str
    method: str | None
    warmup_iters: int | None
    iterations: int | None
    threads: int | None
    cells: int
    facts: tuple[tuple[str, str], ...] = ()  # engine facts (details.info), differing values joined


@dataclass(frozen=True)
class ThroughputChart:
    """Throughput against batch size for one model x task x backend: one series per scheme."""

    anchor: str
    model: str
    task: str
    backend: str
    series: tuple[tuple[str, tuple[tuple[int, float], ...]], ...]  # (label, ((batch, seq/s), ...))
    baselines: tuple[str, ...]  # labels of the fp32 series
    rows: tuple[LatencyRow, ...]  # the numbers behind the chart


@dataclass(frozen=True)
class PairVerdict:
    """The verdict of one model x task pair across its quantized schemes."""

    anchor: str
    model: str
    task: str
    n_quantized: int  # quantized accuracy rows that carry a verdict
    n_passing: int
    best: AccuracyRow | None  # highest value among passing rows, else highest value
    worst: AccuracyRow | None  # largest drop
    # rows of the same pool that ``best`` does not beat beyond the intervals (report.claims):
    # when any, the best scheme is a tie and the report says "tied best: ..."
    tied: tuple[AccuracyRow, ...] = ()

    @property
    def passed(self) -> bool | None:
        """True when some quantized scheme passes the bound; None when nothing was judged."""
        return None if self.n_quantized == 0 else self.n_passing > 0


@dataclass(frozen=True)
class VerdictSummary:
    """The headline: how many pairs pass, the worst regression, the best speedup, failures."""

    pairs_total: int  # model x task pairs with accuracy rows
    pairs_passing: int  # ... of which some quantized scheme passes the bound
    pairs_unjudged: int  # ... of which none has a verdict (every int8 cell failed): not passing
    verdicts_total: int
    verdicts_passing: int
    worst_regression: AccuracyRow | None
    best_speedup: LatencyRow | None
    failed_cells: int
    skipped_cells: int
    ok_cells: int

    @property
    def passed(self) -> bool | None:
        """Every pair has a passing quantized scheme; None when the run judged nothing."""
        return None if self.verdicts_total == 0 else self.pairs_passing == self.pairs_total
