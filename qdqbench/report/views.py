"""Views across the cells of one model × task: engines beside fake-quant, peers, calibrators, Pareto.

Each builder takes rows that ``rows`` already built (the row types of ``model``) (accuracy and
latency rows, numbers as stored) and returns frozen dataclasses the renderers lay out. The few
numbers derived here (an engine's gap to the fake-quant score, the half-width of a stored
interval, which point is Pareto-optimal, who beats whom) are computed once, so HTML, Markdown
and CSV say the same thing. Statements are plain text; renderers escape them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qdqbench.quant.registry import CALIBRATION_METHODS  # calibrators shown in the registry's order
from qdqbench.report.claims import TIE, accuracy_outcome, dominates, latency_outcome
from qdqbench.report.fmt import Anchors, as_int, fmt_delta_points, fmt_ms, fmt_score, fmt_shape, slug
from qdqbench.report.model import AccuracyRow, LatencyRow, is_peer_kind

# The reference backend: its accuracy cells are the fake-quant (simulated) scores.
REFERENCE_BACKEND = "torch"
# The engine whose scores stand beside fake-quant in the calibrator comparison.
CALIBRATOR_ENGINE = "onnxruntime"


def _finite(x: float | None) -> bool:
    return x is not None and not isinstance(x, bool) and math.isfinite(x)


def _key(x: float | None) -> float:
    return x if _finite(x) else -math.inf


# ----------------------------------------------------------------------------------------------
# engines beside fake-quant


@dataclass(frozen=True)
class EngineScore:
    """One engine's on-engine score of a scheme, beside that scheme's fake-quant (torch) score."""

    backend: str
    precision: str
    acc_anchor: str  # the accuracy row's anchor (acc-<anchor>)
    value: float | None
    passed: bool | None
    drop_ci_low: float | None
    drop_ci_high: float | None
    gap: float | None  # engine - fake-quant (fraction); None without both scores
    changed_vs_torch: int | None  # predictions that differ from the torch model it came from
    max_abs_diff_vs_torch: float | None

    @property
    def ci_half_width(self) -> float | None:
        """Half the width of this engine cell's paired drop interval (fraction)."""
        if not (_finite(self.drop_ci_low) and _finite(self.drop_ci_high)):
            return None
        return (self.drop_ci_high - self.drop_ci_low) / 2

    @property
    def flagged(self) -> bool | None:
        """The engine differs from fake-quant by more than its drop CI half-width; None: unknown."""
        half = self.ci_half_width
        if not _finite(self.gap) or half is None:
            return None
        return abs(self.gap) > half


@dataclass(frozen=True)
class SideBySideRow:
    """One scheme of one model × task: fp32, fake-quant and every engine's score in one row."""

    anchor: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    metric: str
    fp32_value: float | None
    fakequant_value: float | None  # the torch score (fp32 itself for the fp32 scheme)
    fakequant_passed: bool | None
    fakequant_anchor: str | None
    engines: tuple[EngineScore, ...]

    @property
    def is_peer(self) -> bool:
        """A peer tool's recipe (ORT quantize_*, ModelOpt), not a QDQBERT scheme."""
        return is_peer_kind(self.scheme_kind)

    def engine(self, backend: str) -> EngineScore | None:
        """This row's score on ``backend``, or None."""
        return next((e for e in self.engines if e.backend == backend), None)


def side_by_side(
    accuracy: Sequence[AccuracyRow], details: Mapping[str, Mapping[str, Any]]
) -> tuple[list[SideBySideRow], list[str]]:
    """Rows per model × task × scheme, and the engines (columns) in run order."""
    engines: list[str] = []
    groups: dict[tuple[str, str, str], list[AccuracyRow]] = {}
    for a in accuracy:
        groups.setdefault((a.model, a.task, a.scheme), []).append(a)
        if a.backend != REFERENCE_BACKEND and a.backend not in engines:
            engines.append(a.backend)
    anchors = Anchors()
    rows = []
    for (model, task, scheme), group in groups.items():
        ref = next((a for a in group if a.backend == REFERENCE_BACKEND), None)
        scores = []
        for a in group:
            if a.backend == REFERENCE_BACKEND:
                continue
            d = details.get(a.cell, {})
            gap = None
            if ref is not None and _finite(a.value) and _finite(ref.value):
                gap = a.value - ref.value
            diff = d.get("max_abs_diff_vs_torch")
            scores.append(
                EngineScore(
                    backend=a.backend,
                    precision=a.precision,
                    acc_anchor=a.anchor,
                    value=a.value,
                    passed=a.passed,
                    drop_ci_low=a.drop_ci_low,
                    drop_ci_high=a.drop_ci_high,
                    gap=gap,
                    changed_vs_torch=as_int(d.get("changed_vs_torch")),
                    max_abs_diff_vs_torch=float(diff) if isinstance(diff, (int, float)) else None,
                )
            )
        first = group[0]
        rows.append(
            SideBySideRow(
                anchor=anchors(model, task, scheme),
                model=model,
                task=task,
                scheme=scheme,
                scheme_kind=first.scheme_kind,
                metric=first.metric,
                fp32_value=next((a.fp32_value for a in group if a.fp32_value is not None), None),
                fakequant_value=ref.value if ref else None,
                fakequant_passed=ref.passed if ref else None,
                fakequant_anchor=ref.anchor if ref else None,
                engines=tuple(scores),
            )
        )
    return rows, engines


# ----------------------------------------------------------------------------------------------
# peers


@dataclass(frozen=True)
class PeerShape:
    """Mean latency of the best QDQBERT scheme and the best peer at one timed shape."""

    batch: int | None
    seq: int | None
    qdq_ms: float | None
    peer_ms: float | None
    qdq_std_ms: float | None = None
    peer_std_ms: float | None = None
    qdq_iterations: int | None = None
    peer_iterations: int | None = None

    @property
    def outcome(self) -> str:
        """'faster' or 'slower' for QDQBERT when the means differ beyond their spread
        (``claims.latency_outcome``), else 'tie'; 'unknown' without both means."""
        return latency_outcome(
            (self.qdq_ms, self.qdq_std_ms, self.qdq_iterations),
            (self.peer_ms, self.peer_std_ms, self.peer_iterations),
        )


@dataclass(frozen=True)
class PeerEngineComparison:
    """The best QDQBERT scheme against the best peer on one engine, from stored numbers."""

    anchor: str  # peer-<model>-<task>--<engine>
    backend: str
    metric: str
    qdq: AccuracyRow
    peer: AccuracyRow
    shapes: tuple[PeerShape, ...]  # shapes timed for both, ascending
    accuracy_outcome: str  # wins | loses | ties (within the intervals) | unknown
    speed_outcome: str  # wins (faster beyond the spread at every shape) | loses | mixed | ties | unknown
    beats: str  # both | accuracy | speed | neither
    headline: str  # 'QDQBERT beats the best peer on accuracy but not on speed'
    statement: str  # the headline with the numbers behind it

    @property
    def accuracy_gap(self) -> float | None:
        """QDQBERT score - peer score (fraction)."""
        if not (_finite(self.qdq.value) and _finite(self.peer.value)):
            return None
        return self.qdq.value - self.peer.value

    def shapes_where(self, outcome: str) -> list[str]:
        """Shapes ('8×128') where QDQBERT was ``outcome`` (faster, slower, tie)."""
        return [fmt_shape(s.batch, s.seq) for s in self.shapes if s.outcome == outcome]


@dataclass(frozen=True)
class PeerComparison:
    """Peers of one model × task: one comparison per engine that ran both kinds of scheme."""

    anchor: str  # peer-<anchor>
    model: str
    task: str
    peers: tuple[str, ...]  # peer schemes with accuracy rows on an engine
    engines: tuple[PeerEngineComparison, ...]
    note: str  # why nothing was compared, when ``engines`` is empty


def _best(rows: Sequence[AccuracyRow]) -> AccuracyRow | None:
    passing = [a for a in rows if a.passed]
    return max(passing or rows, key=lambda a: _key(a.value), default=None)


def _peer_headline(acc: str, speed: str, slower_or_tied: list[str], faster: list[str]) -> str:
    if speed == "unknown":
        if acc == "ties":
            return f"QDQBERT {TIE} with the best peer on accuracy; speed not compared (no shape timed for both)"
        clause = "on accuracy" if acc == "wins" else "not on accuracy"
        return f"QDQBERT beats the best peer {clause}; speed not compared (no shape timed for both)"
    if acc == "unknown":
        if speed == "ties":
            return f"QDQBERT {TIE} with the best peer on speed; accuracy not compared"
        clause = "on speed" if speed == "wins" else "not on speed"
        return f"QDQBERT beats the best peer {clause}; accuracy not compared"
    a, s = acc == "wins", speed == "wins"
    if acc == "ties" or speed == "ties":
        # a tie is no loss: say what QDQBERT beats, then which axis ties and why
        won = "accuracy" if a else "speed" if s else None
        tied = " and ".join(x for x, o in (("accuracy", acc), ("speed", speed)) if o == "ties")
        text = f"QDQBERT beats the best peer on {won}" if won else (
            "QDQBERT beats the best peer on neither accuracy nor speed")
        text += f"; {tied} " + (TIE if acc != speed else "tie (within the intervals)")
        if speed == "mixed":
            text += f" (faster only at {', '.join(faster)}; not at {', '.join(slower_or_tied)})"
        return text
    text = {
        (True, True): "on both accuracy and speed",
        (True, False): "on accuracy but not on speed",
        (False, True): "on speed but not on accuracy",
        (False, False): "on neither accuracy nor speed",
    }[(a, s)]
    if speed == "mixed":
        text += f" (faster only at {', '.join(faster)}; not at {', '.join(slower_or_tied)})"
    return "QDQBERT beats the best peer " + text


def _compare_on_engine(
    anchor: str,
    backend: str,
    qdq: AccuracyRow,
    peer: AccuracyRow,
    latency: Sequence[LatencyRow],
) -> PeerEngineComparison:
    def timed(scheme: str) -> dict[tuple[int | None, int | None], LatencyRow]:
        return {
            (lat.batch, lat.seq): lat
            for lat in latency
            if (lat.model, lat.task, lat.backend, lat.scheme)
            == (qdq.model, qdq.task, backend, scheme)
        }

    q_ms, p_ms = timed(qdq.scheme), timed(peer.scheme)
    common = sorted(
        (k for k in q_ms if k in p_ms),
        key=lambda k: (k[1] if k[1] is not None else -1, k[0] if k[0] is not None else -1),
    )
    shapes = tuple(
        PeerShape(
            b, s, q_ms[(b, s)].mean_ms, p_ms[(b, s)].mean_ms,
            q_ms[(b, s)].std_ms, p_ms[(b, s)].std_ms,
            q_ms[(b, s)].iterations, p_ms[(b, s)].iterations,
        )  # fmt: skip
        for b, s in common
    )
    known = [s for s in shapes if s.outcome != "unknown"]
    if not known:
        speed = "unknown"
    elif all(s.outcome == "faster" for s in known):
        speed = "wins"
    elif all(s.outcome == "slower" for s in known):
        speed = "loses"
    elif all(s.outcome == "tie" for s in known):
        speed = "ties"
    else:
        speed = "mixed"
    acc = accuracy_outcome(qdq, peer)  # wins only beyond the intervals (claims)
    beats = {
        (True, True): "both",
        (True, False): "accuracy",
        (False, True): "speed",
        (False, False): "neither",
    }[(acc == "wins", speed == "wins")]
    faster = [fmt_shape(s.batch, s.seq) for s in known if s.outcome == "faster"]
    others = [fmt_shape(s.batch, s.seq) for s in known if s.outcome != "faster"]
    headline = _peer_headline(acc, speed, others, faster)
    gap = qdq.value - peer.value if acc != "unknown" else None
    peer_name = (
        peer.scheme if peer.scheme == peer.scheme_kind else f"{peer.scheme}, {peer.scheme_kind}"
    )
    numbers = (
        f"{qdq.metric} {fmt_score(qdq.value)} ({qdq.scheme}) vs {fmt_score(peer.value)} "
        f"({peer_name}), {fmt_delta_points(gap)} pts"
    )
    if shapes:
        numbers += "; mean latency " + ", ".join(
            f"{fmt_shape(s.batch, s.seq)}: {fmt_ms(s.qdq_ms)} vs {fmt_ms(s.peer_ms)} ms ({s.outcome})"
            for s in shapes
        )
    statement = f"On {backend}: {headline} — {numbers}."
    return PeerEngineComparison(
        anchor=anchor,
        backend=backend,
        metric=qdq.metric,
        qdq=qdq,
        peer=peer,
        shapes=shapes,
        accuracy_outcome=acc,
        speed_outcome=speed,
        beats=beats,
        headline=headline,
        statement=statement,
    )


def peer_comparisons(
    accuracy: Sequence[AccuracyRow], latency: Sequence[LatencyRow], pair_anchor: Mapping[tuple, str]
) -> list[PeerComparison]:
    """Per model × task with peers: the best QDQBERT scheme against the best peer, per engine.

    Best = the highest on-engine primary metric on that engine, among the schemes that pass the
    bound there if any do (the same rule for both sides). Speed compares the two schemes' mean
    latency at every shape timed for both on that engine.
    """
    groups: dict[tuple[str, str], list[AccuracyRow]] = {}
    for a in accuracy:
        groups.setdefault((a.model, a.task), []).append(a)
    out = []
    for (model, task), rows in groups.items():
        peers = [a for a in rows if is_peer_kind(a.scheme_kind) and a.backend != REFERENCE_BACKEND]
        if not peers:
            continue
        base = pair_anchor.get((model, task)) or Anchors()(model, task)
        comparisons = []
        for backend in dict.fromkeys(a.backend for a in peers):
            qdq = _best([a for a in rows if a.scheme_kind == "qdq" and a.backend == backend])
            peer = _best([a for a in peers if a.backend == backend])
            if qdq is None or peer is None:
                continue
            comparisons.append(
                _compare_on_engine(f"peer-{base}--{slug(backend)}", backend, qdq, peer, latency)
            )
        note = "" if comparisons else "no engine ran both a QDQBERT scheme and a peer"
        out.append(
            PeerComparison(
                anchor=f"peer-{base}",
                model=model,
                task=task,
                peers=tuple(dict.fromkeys(a.scheme for a in peers)),
                engines=tuple(comparisons),
                note=note,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# calibrators


@dataclass(frozen=True)
class CalibratorRow:
    """One quantized scheme's calibration and its fake-quant and engine scores."""

    anchor: str
    model: str
    task: str
    scheme: str
    scheme_kind: str
    method: str  # max | entropy | percentile | mse (the base method of ``calibrator``)
    calibrator: str  # as stored, e.g. 'percentile-99.99' when an auto recipe chose it
    samples: int | None
    seconds: float | None
    torch_value: float | None
    torch_passed: bool | None
    engine: str  # CALIBRATOR_ENGINE
    engine_value: float | None
    engine_passed: bool | None


@dataclass(frozen=True)
class CalibratorChart:
    """Quantized schemes of one model × task by calibration method, with fp32 and threshold."""

    anchor: str
    model: str
    task: str
    metric: str
    fp32_value: float | None
    threshold: float | None  # the lowest passing value (stored with the verdicts)
    engine: str
    rows: tuple[CalibratorRow, ...]  # ordered by method, then run order

    @property
    def methods(self) -> tuple[str, ...]:
        """Methods in chart order."""
        return tuple(dict.fromkeys(r.method for r in self.rows))

    @property
    def has_engine(self) -> bool:
        """Whether any scheme has an engine score."""
        return any(r.engine_value is not None for r in self.rows)


def _calibration(details: Mapping[str, Any]) -> tuple[str, int | None, float | None] | None:
    cal = details.get("calibration")
    if not isinstance(cal, Mapping) or not cal.get("method"):
        return None
    calibrator = str(cal["method"])
    recipe = details.get("recipe")
    if isinstance(recipe, Mapping) and isinstance(recipe.get("description"), Mapping):
        chosen = recipe["description"].get("calibrator")
        if chosen:  # an auto recipe picked its own calibrator; the scheme's default was not used
            calibrator = str(chosen)
    seconds = cal.get("seconds")
    seconds = (
        float(seconds)
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
        else None
    )
    return calibrator, as_int(cal.get("samples")), seconds


def _base_method(calibrator: str) -> str:
    return calibrator.replace(":", "-").split("-", 1)[0]


def calibrator_charts(
    accuracy: Sequence[AccuracyRow],
    details: Mapping[str, Mapping[str, Any]],
    pair_anchor: Mapping[tuple, str],
) -> list[CalibratorChart]:
    """One chart per model × task whose quantized schemes record a calibration method."""
    cal: dict[tuple[str, str, str], tuple[str, int | None, float | None]] = {}
    for a in accuracy:
        found = _calibration(details.get(a.cell, {}))
        if found is not None and a.is_quantized:
            cal.setdefault((a.model, a.task, a.scheme), found)
    groups: dict[tuple[str, str], list[AccuracyRow]] = {}
    for a in accuracy:
        groups.setdefault((a.model, a.task), []).append(a)
    charts = []
    for (model, task), rows in groups.items():
        schemes = [s for s in dict.fromkeys(a.scheme for a in rows) if (model, task, s) in cal]
        if not schemes:
            continue
        anchors = Anchors()
        base = pair_anchor.get((model, task)) or Anchors()(model, task)
        out = []
        for scheme in schemes:
            calibrator, samples, seconds = cal[(model, task, scheme)]
            torch = next(
                (a for a in rows if a.scheme == scheme and a.backend == REFERENCE_BACKEND), None
            )
            eng = next(
                (a for a in rows if a.scheme == scheme and a.backend == CALIBRATOR_ENGINE), None
            )
            some = torch or eng
            out.append(
                CalibratorRow(
                    anchor=anchors(base, scheme),
                    model=model,
                    task=task,
                    scheme=scheme,
                    scheme_kind=some.scheme_kind if some else "",
                    method=_base_method(calibrator),
                    calibrator=calibrator,
                    samples=samples,
                    seconds=seconds,
                    torch_value=torch.value if torch else None,
                    torch_passed=torch.passed if torch else None,
                    engine=CALIBRATOR_ENGINE,
                    engine_value=eng.value if eng else None,
                    engine_passed=eng.passed if eng else None,
                )
            )
        order = {m: i for i, m in enumerate(CALIBRATION_METHODS)}
        first_seen = {m: i for i, m in enumerate(dict.fromkeys(r.method for r in out))}
        out.sort(key=lambda r: (order.get(r.method, len(order)), first_seen[r.method]))
        judged = [a for a in rows if a.threshold is not None and a.is_quantized]
        fp32 = next((a.fp32_value for a in rows if a.fp32_value is not None), None)
        charts.append(
            CalibratorChart(
                anchor=base,
                model=model,
                task=task,
                metric=rows[0].metric,
                fp32_value=fp32,
                threshold=judged[0].threshold if judged else None,
                engine=CALIBRATOR_ENGINE,
                rows=tuple(out),
            )
        )
    return charts


# ----------------------------------------------------------------------------------------------
# accuracy vs latency (Pareto)


@dataclass(frozen=True)
class ParetoPoint:
    """One scheme on one backend: its score there and its mean latency at the largest batch."""

    anchor: str
    scheme: str
    scheme_kind: str
    backend: str
    precision: str
    batch: int | None
    seq: int | None
    value: float | None  # on-engine primary metric (fake-quant for torch)
    mean_ms: float | None
    passed: bool | None
    optimal: bool  # no other point is more accurate and faster, both beyond the intervals

    @property
    def is_peer(self) -> bool:
        """A peer tool's recipe."""
        return is_peer_kind(self.scheme_kind)


@dataclass(frozen=True)
class ParetoChart:
    """Accuracy against latency for one model × task, across schemes and backends."""

    anchor: str
    model: str
    task: str
    metric: str
    points: tuple[ParetoPoint, ...]


def pareto_optimal(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For exact (accuracy, latency) pairs: True where no other pair dominates (higher is better
    for accuracy, lower for latency; dominating means no worse in both and better in one). The
    report's charts use ``pareto_flags`` instead, which knows each point's uncertainty."""
    flags = []
    for i, (acc, lat) in enumerate(points):
        dominated = any(
            a >= acc and t <= lat and (a > acc or t < lat)
            for j, (a, t) in enumerate(points)
            if j != i
        )
        flags.append(not dominated)
    return flags


def pareto_flags(points: Sequence[tuple[AccuracyRow, LatencyRow]]) -> list[bool]:
    """True where no other point dominates by the claims rule: dominated only when another point
    is better on both axes beyond the intervals (``claims.dominates``)."""
    return [
        not any(dominates(other, p) for j, other in enumerate(points) if j != i)
        for i, p in enumerate(points)
    ]


def pareto_charts(
    accuracy: Sequence[AccuracyRow], latency: Sequence[LatencyRow], pair_anchor: Mapping[tuple, str]
) -> list[ParetoChart]:
    """Per model × task with at least two points: schemes × backends at each backend's largest
    timed shape (largest batch, then longest sequence), Pareto-optimal points flagged."""
    charts = []
    groups: dict[tuple[str, str], list[AccuracyRow]] = {}
    for a in accuracy:
        groups.setdefault((a.model, a.task), []).append(a)
    for (model, task), rows in groups.items():
        timed = [
            lat
            for lat in latency
            if (lat.model, lat.task) == (model, task) and lat.batch is not None
        ]
        largest: dict[str, tuple[int, int]] = {}
        for lat in timed:
            shape = (lat.batch, lat.seq if lat.seq is not None else -1)
            if lat.backend not in largest or shape > largest[lat.backend]:
                largest[lat.backend] = shape
        candidates = []
        for a in rows:
            if a.backend not in largest or not _finite(a.value):
                continue
            batch, seq = largest[a.backend]
            lat = next(
                (
                    x
                    for x in timed
                    if (x.scheme, x.backend, x.batch, x.seq if x.seq is not None else -1)
                    == (a.scheme, a.backend, batch, seq)
                ),
                None,
            )
            if lat is None or not _finite(lat.mean_ms):
                continue
            candidates.append((a, lat))
        if len(candidates) < 2:
            continue
        flags = pareto_flags(candidates)
        anchors = Anchors()
        base = pair_anchor.get((model, task)) or Anchors()(model, task)
        points = tuple(
            ParetoPoint(
                anchor=anchors(base, a.scheme, a.backend),
                scheme=a.scheme,
                scheme_kind=a.scheme_kind,
                backend=a.backend,
                precision=a.precision,
                batch=lat.batch,
                seq=lat.seq,
                value=a.value,
                mean_ms=lat.mean_ms,
                passed=a.passed,
                optimal=flag,
            )
            for (a, lat), flag in zip(candidates, flags)
        )
        charts.append(ParetoChart(base, model, task, rows[0].metric, points))
    return charts


__all__ = [
    "CALIBRATOR_ENGINE",
    "CalibratorChart",
    "CalibratorRow",
    "EngineScore",
    "ParetoChart",
    "ParetoPoint",
    "PeerComparison",
    "PeerEngineComparison",
    "PeerShape",
    "SideBySideRow",
    "calibrator_charts",
    "is_peer_kind",
    "pareto_charts",
    "pareto_flags",
    "pareto_optimal",
    "peer_comparisons",
    "side_by_side",
]


# ----------------------------------------------------------------------------------------------
# MLPerf-style figures

MLPERF_STYLE_NOTE = (
    "MLPerf-style figures built from this run's latency cells, so they can sit next to MLPerf "
    "BERT results: SingleStream-style = p90 latency at batch 1, Offline-style = throughput at "
    "the largest batch timed. Not an MLPerf submission: no LoadGen (fixed-size batches in a "
    "timed loop, not LoadGen's query traffic), no MLPerf accuracy target or rules, and this "
    "run's task, sequence length and minimum duration rather than MLPerf's."
)


@dataclass(frozen=True)
class MlperfStyleRow:
    """One engine x scheme (per model, task and sequence length) in MLPerf wording."""

    model: str
    task: str
    scheme: str
    is_peer: bool
    backend: str
    precision: str
    seq: int | None
    singlestream_p90_ms: float | None  # p90 latency at batch 1 (None: batch 1 not timed)
    offline_throughput: float | None  # seq/s at the largest batch timed
    offline_batch: int | None


def mlperf_style_rows(latency: Sequence[LatencyRow]) -> list[MlperfStyleRow]:
    """MLPerf-style SingleStream p90 (b1) and Offline-style throughput (largest batch) per
    model x task x engine x scheme x sequence length, in the latency rows' order."""
    groups: dict[tuple, list[LatencyRow]] = {}
    for row in latency:
        groups.setdefault((row.model, row.task, row.backend, row.scheme, row.seq), []).append(row)
    out = []
    for (model, task, backend, scheme, seq), rows in groups.items():
        single = next((r for r in rows if r.batch == 1), None)
        batched = [r for r in rows if r.batch is not None]
        largest = max(batched, key=lambda r: r.batch or 0) if batched else None
        out.append(MlperfStyleRow(
            model=model, task=task, scheme=scheme, is_peer=rows[0].is_peer, backend=backend,
            precision=rows[0].precision, seq=seq,
            singlestream_p90_ms=single.p90_ms if single else None,
            offline_throughput=largest.throughput if largest else None,
            offline_batch=largest.batch if largest else None))
    return out
