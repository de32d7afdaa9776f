"""The data of the report's "Where the time goes" section and of the footprint columns, as pure
functions of the records: no formatting beyond the display strings each table offers, no HTML.

``where_time_goes(records)``: per model × task × engine × shape, one row per scheme (the fp32
scheme first, so fp32 sits next to its INT8 schemes), with the shares of the op categories of
``engines.profile.CATEGORIES`` from each latency cell's ``details.op_profile``, the profiled
milliseconds, the largest op outside the GEMMs, and — where the suite measured the GEMM floor
(``timing.floor``) — the floor and the cell's distance to it, with the categories that make up
the difference. ``latency_extras(records)``: per latency cell its floor ratio and joules per
inference (the latency table's extra columns). ``export_size_ratios(records)``: per export
cell its ONNX size over the fp32 export of the same model and task.

A renderer turns a ``Table`` into its format: ``columns`` with ``rows`` of raw values (for CSV:
shares as fractions, times in ms) and ``text_rows()`` for HTML / Markdown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from qdqbench.core.results import Record
from qdqbench.engines.profile import CATEGORIES

CATEGORY_TITLES = {"matmul": "GEMMs", "attention": "attention", "layernorm": "LayerNorm",
                   "gelu": "GELU", "softmax": "softmax", "qdq": "Q/DQ", "other": "rest"}

NOTE = ("Shares of the profiled time per inference, from each engine's own profiler run on extra "
        "iterations after the timed ones (never the timed loop): ONNX Runtime's profiler, "
        "OpenVINO's performance counters, TensorRT's layer profiler, torch.profiler. GEMMs = the "
        "linear layers' matrix multiplies; attention = fused attention kernels and the Q·Kᵀ / P·V "
        "matmuls where the engine runs them separately (softmax is its own column unless fused "
        "into an attention kernel); rest = everything else (adds, reshapes, embeddings, ...). "
        "Profiled time is the sum of op times and can differ from the timed latency (profiler "
        "overhead, gaps between ops).")
FLOOR_NOTE = ("× floor = mean latency over the engine's own GEMM floor at that shape: the sum over "
              "the model's linear-layer GEMMs of a one-MatMul model of each shape timed on the same "
              "engine, threads and worker method (INT8: the faster of float and int8 input/output "
              "per shape; attention matmuls and all non-GEMM ops left out; weights cache-hot), so "
              "1.0 would mean nothing but GEMMs at the engine's own GEMM speed, and a ratio at or "
              "below 1 means at the floor within the timing noise (compare the cell's spread), never "
              "faster than the hardware. \"Beyond the GEMMs\" names the profiled categories that "
              "make up the difference, largest first.")


@dataclass(frozen=True)
class Table:
    """A plain table: column names, rows of raw values, notes; ``text_rows`` for display."""

    title: str
    anchor: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    kinds: tuple[str, ...]  # per column: "text" | "int" | "ms" | "share" | "ratio"
    notes: tuple[str, ...] = ()

    def text_rows(self) -> list[list[str]]:
        """The rows as display strings (shares in %, ms to 3 significant digits, ratios ×)."""
        return [[_fmt(v, k) for v, k in zip(row, self.kinds)] for row in self.rows]

    @property
    def numeric(self) -> tuple[int, ...]:
        """Indexes of the numeric columns (right-aligned)."""
        return tuple(i for i, k in enumerate(self.kinds) if k != "text")

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as {column: raw value} (for CSV)."""
        return [dict(zip(self.columns, row)) for row in self.rows]


def _fmt(value: Any, kind: str) -> str:
    if value is None or value == "":
        return "—"
    if kind == "share":
        return f"{100 * value:.1f}%"
    if kind == "ms":
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "int":
        return str(int(value))
    return str(value)


def _ok(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("status") == "ok"


def _latency(records: Iterable[Record]) -> list[Record]:
    return [r for r in records if r.kind == "latency" and r.status == "ok"]


BASE_COLUMNS = ("model", "task", "backend", "batch", "seq", "scheme", "precision", "profiled_ms",
                *[f"share_{c}" for c in CATEGORIES], "top_non_gemm_op")
BASE_KINDS = ("text",) * 3 + ("int",) * 2 + ("text",) * 2 + ("ms",) + ("share",) * len(CATEGORIES) + ("text",)
FLOOR_COLUMNS = ["floor_ms", "x_floor", "beyond_gemms"]


def csv_table(table: Table | None) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """(columns, rows as dicts) for a CSV file: the base columns, header only, without a table."""
    return (table.columns, table.dicts()) if table else (BASE_COLUMNS, [])


def where_time_goes(records: Sequence[Record]) -> Table | None:
    """The "Where the time goes" table, or None when no latency cell carries a profile."""
    lat = _latency(records)
    profiled = [r for r in lat if _ok(r.details.get("op_profile"))]
    if not profiled:
        return None
    any_floor = any(_ok(r.details.get("gemm_floor")) for r in profiled)
    order: dict[tuple, int] = {}
    for r in profiled:
        order.setdefault((r.model, r.task, r.backend, r.shape.batch if r.shape else None,
                          r.shape.seq if r.shape else None), len(order))

    def key(r: Record) -> tuple:
        group = (r.model, r.task, r.backend, r.shape.batch if r.shape else None, r.shape.seq if r.shape else None)
        return (order[group], r.scheme_kind != "fp32")  # stable: run order within fp32 / the rest

    columns, kinds = list(BASE_COLUMNS), list(BASE_KINDS)
    if any_floor:
        columns += FLOOR_COLUMNS
        kinds += ["ms", "ratio", "text"]
    rows = []
    for r in sorted(profiled, key=key):
        p = r.details["op_profile"]
        shares = p.get("shares") or {}
        top = next((o for o in p.get("ops") or [] if o.get("category") != "matmul"), None)
        top_text = (f"{top['op']} ({top.get('category')}, {top['ms']:.3g} ms)" if top else "")
        row = [r.model, r.task, r.backend, r.shape.batch if r.shape else None,
               r.shape.seq if r.shape else None, r.scheme, r.precision, p.get("total_ms"),
               *[shares.get(c, 0.0) for c in CATEGORIES], top_text]
        if any_floor:
            f = r.details.get("gemm_floor")
            if _ok(f):
                by_cat = p.get("by_category") or {}
                beyond = sorted(((c, by_cat.get(c, 0.0)) for c in CATEGORIES if c != "matmul"),
                                key=lambda cv: -cv[1])
                text = ", ".join(f"{CATEGORY_TITLES[c]} {v:.3g} ms" for c, v in beyond[:3] if v > 0)
                ratio = f.get("ratio")
                if isinstance(ratio, (int, float)) and ratio <= 1.0:
                    text = "at the floor within the timing noise" + (f"; {text}" if text else "")
                row += [f.get("floor_ms"), f.get("ratio"), text]
            else:
                row += [None, None, ""]
        rows.append(tuple(row))
    notes = [NOTE] + ([FLOOR_NOTE] if any_floor else [])
    missing = sorted({f"{r.backend}: {r.details['op_profile'].get('why') or r.details['op_profile'].get('error')}"
                      for r in lat if isinstance(r.details.get("op_profile"), dict)
                      and not _ok(r.details["op_profile"])})
    if missing:
        notes.append("Not profiled: " + "; ".join(missing))
    return Table(title="Where the time goes", anchor="time-shares", columns=tuple(columns),
                 rows=tuple(rows), kinds=tuple(kinds), notes=tuple(notes))


def latency_extras(records: Sequence[Record]) -> dict[str, dict[str, float | None]]:
    """{latency cell: {"x_floor": ratio or None, "energy_j": joules per inference or None}}."""
    out = {}
    for r in _latency(records):
        f = r.details.get("gemm_floor")
        e = (r.details.get("resources") or {}).get("energy")
        out[r.cell] = {"x_floor": f.get("ratio") if _ok(f) else None,
                       "energy_j": e.get("joules_per_inference") if _ok(e) else None}
    return out


def export_size_ratios(records: Sequence[Record]) -> dict[str, float | None]:
    """{export cell: its onnx_mb over the fp32 export's of the same model and task (None: no fp32)}."""
    exports = [r for r in records if r.kind == "export" and r.status == "ok"]

    def mb(r: Record) -> float | None:
        m = r.metric("onnx_mb")
        return None if m is None else m.value

    fp32 = {(r.model, r.task): mb(r) for r in exports if r.scheme_kind == "fp32"}
    out = {}
    for r in exports:
        base, size = fp32.get((r.model, r.task)), mb(r)
        out[r.cell] = size / base if base and size is not None else None
    return out
