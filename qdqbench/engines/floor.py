"""The hardware limit of one engine: its own GEMM speed at the model's GEMM shapes.

``gemm_shapes`` reads the linear-layer GEMMs of an ONNX model (MatMul / Gemm nodes whose second
input is a weight: an initializer, possibly behind DequantizeLinear / Transpose / Cast), as
(rows per token or per sequence, K, N, count). ``gemm_model`` writes a one-MatMul ONNX model of one
shape: fp32 ``x · W``, or INT8 in one of two forms (``INT8_FORMS``), each with an int8 weight
initializer → per-channel DequantizeLinear like our exports: ``float-io`` takes float ``x``
(QuantizeLinear → DequantizeLinear → MatMul, float out), the way a GEMM fed by a float op runs;
``int8-io`` takes int8 ``x`` (DequantizeLinear → MatMul → QuantizeLinear, int8 out), the way a GEMM
between two quantizers runs once the engine fuses the requantization into it (OpenVINO writes
int8 from 48 of BERT's 72 FullyConnected layers). ``gemm_floor`` times every distinct shape in
the same worker process method as the latency cells (``measure_in_subprocess``, same threads and
options), in every form, keeps the fastest form per shape, and returns the achieved GOPS per
shape and the "GEMMs only" floor of the whole model: the sum over its GEMMs of their mean latency.

What the floor leaves out, on purpose: the attention matmuls (Q·Kᵀ, P·V; about s / 6H of the
linear-layer work, 3% for BERT-base at s=128) and everything that is not a GEMM. Each one-MatMul
model is timed alone, so its weights stay hot in cache: the floor is optimistic, a lower bound.
"""

from __future__ import annotations

import collections
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from qdqbench.core.errors import BackendError, one_line
from qdqbench.core.files import save_atomic, write_json_atomic

# Ops a weight passes through between its initializer and the MatMul (our exports, ORT's).
_WEIGHT_PATH_OPS = ("DequantizeLinear", "Transpose", "Cast", "Identity")
FLOOR_PRECISIONS = ("fp32", "int8")
# The forms an INT8 GEMM is timed in (module docstring); the floor keeps the faster per shape.
INT8_FORMS = ("float-io", "int8-io")


def gemm_shapes(onnx_path: Path) -> list[dict[str, Any]]:
    """[{"rows": "tokens"|"sequences", "k", "n", "count"}] of the model's weight GEMMs.

    ``rows`` says what M is at a (batch, seq) shape: batch·seq for a rank-3 activation (encoder
    layers), batch for a rank-2 one (pooler, classifier), from ONNX shape inference.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes are a refinement: without them every GEMM counts per token
        pass
    graph = model.graph
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    ranks = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.type.tensor_type.HasField("shape"):
            ranks[vi.name] = len(vi.type.tensor_type.shape.dim)
    counts: collections.Counter = collections.Counter()
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        name, flips = node.input[1], 0
        while name not in inits and name in producer and producer[name].op_type in _WEIGHT_PATH_OPS:
            flips += producer[name].op_type == "Transpose"
            name = producer[name].input[0]
        dims = inits.get(name)
        if dims is None or len(dims) != 2:
            continue  # activation × activation (attention) or a batched weight: not a linear GEMM
        if node.op_type == "Gemm":
            flips += next((a.i for a in node.attribute if a.name == "transB"), 0)
        k, n = (dims[1], dims[0]) if flips % 2 else dims
        rows = "sequences" if ranks.get(node.input[0], 3) == 2 else "tokens"
        counts[(rows, int(k), int(n))] += 1
    return [{"rows": r, "k": k, "n": n, "count": c} for (r, k, n), c in sorted(counts.items())]


def gemm_model(path: Path, m: int, k: int, n: int, precision: str, seed: int = 0,
               form: str = "float-io") -> Path:
    """Write a one-MatMul ONNX model of ``x`` [m, k]: fp32, or our INT8 Q/DQ form ``form``
    (``INT8_FORMS``: float32 ``x`` and ``y``, or int8 ``x`` and ``y``)."""
    from onnx import TensorProto, helper, numpy_helper

    if precision not in FLOOR_PRECISIONS:
        raise BackendError(f"GEMM floor: precision {precision!r} is not one of {FLOOR_PRECISIONS}")
    if precision == "int8" and form not in INT8_FORMS:
        raise BackendError(f"GEMM floor: INT8 form {form!r} is not one of {INT8_FORMS}")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    io = TensorProto.INT8 if precision == "int8" and form == "int8-io" else TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", io, [m, k])
    y = helper.make_tensor_value_info("y", io, [m, n])
    if precision == "fp32":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        inits = [numpy_helper.from_array(w, "w")]
    else:
        w_scale = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)  # per output channel (axis 1)
        w_q = np.clip(np.round(w / w_scale), -128, 127).astype(np.int8)
        inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_scale, "w_scale"),
                 numpy_helper.from_array(np.zeros(n, np.int8), "w_zp"),
                 numpy_helper.from_array(np.array(4.0 / 127, np.float32), "x_scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "x_zp")]
        weight = helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=1)
        if form == "float-io":
            nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
                     helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
                     weight, helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"])]
        else:
            # x ~ N(0, 1) and w ~ N(0, 0.05²): y's spread is 0.05·√k; ±4σ in range, as calibration gives.
            inits += [numpy_helper.from_array(np.array(4 * 0.05 * np.sqrt(k) / 127, np.float32), "y_scale"),
                      numpy_helper.from_array(np.array(0, np.int8), "y_zp")]
            nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zp"], ["x_dq"]),
                     weight, helper.make_node("MatMul", ["x_dq", "w_dq"], ["y_f"]),
                     helper.make_node("QuantizeLinear", ["y_f", "y_scale", "y_zp"], ["y"])]
    graph = helper.make_graph(nodes, f"gemm_{precision}_{m}x{k}x{n}", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="qdqbench-gemm-floor")
    model.ir_version = 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(path, lambda fh: fh.write(model.SerializeToString()))
    return path


def floor_of(shapes: list[dict[str, Any]], timed: dict[tuple[int, int, int], float],
             batch: int, seq: int) -> float:
    """The "GEMMs only" floor in ms: Σ count × mean ms of each GEMM at (batch, seq); pure."""
    total = 0.0
    for s in shapes:
        m = batch * seq if s["rows"] == "tokens" else batch
        total += s["count"] * timed[(m, s["k"], s["n"])]
    return total


def gemm_floor(source_onnx: Path, backend: str, precision: str, batch: int, seq: int, settings: Any, *,
               threads: int | None, options: dict[str, Any] | None, cache_dir: Path,
               timeout_s: float = 600) -> dict[str, Any]:
    """Time the engine's own GEMM at every distinct GEMM shape of ``source_onnx`` at (batch, seq).

    Each shape, in each form (INT8: ``INT8_FORMS``), is one worker run (``measure_in_subprocess``);
    its result is cached as JSON in ``cache_dir`` (per engine, options, precision, threads, form
    and shape), so a run measures each once and a resumed run not again. A shape's time is its
    fastest form that the engine ran in ``precision`` (a form it ran in float, or could not run,
    is recorded and left out). Returns ``{"floor_ms", "precision", "gemms": [...], "method"}``;
    BackendError (one line) when no form of a GEMM can be timed.
    """
    if precision not in FLOOR_PRECISIONS:
        raise BackendError(f"GEMM floor: measured for fp32 and int8 only, not {precision}")
    shapes = gemm_shapes(source_onnx)
    if not shapes:
        raise BackendError(f"GEMM floor: no weight GEMM found in {source_onnx}")
    cache_dir = Path(cache_dir)
    tag = json.dumps({"backend": backend, "options": options or {}, "threads": threads,
                      "settings": settings.to_dict()}, sort_keys=True)
    key = hashlib.sha256(tag.encode()).hexdigest()[:10]
    forms = INT8_FORMS if precision == "int8" else ("float-io",)
    timed: dict[tuple[int, int, int], float] = {}
    gemms = []
    for s in shapes:
        m = batch * seq if s["rows"] == "tokens" else batch
        tried = {form: _time_form(cache_dir, key, backend, precision, form, m, s["k"], s["n"], settings,
                                  threads=threads, options=options, timeout_s=timeout_s) for form in forms}
        usable = {f: e for f, e in tried.items() if "mean_ms" in e and e["engine_precision"] == precision}
        if not usable:
            why = "; ".join(f"{f}: {e.get('error') or 'ran as ' + str(e.get('engine_precision'))}"
                            for f, e in tried.items())
            raise BackendError(f"GEMM floor {precision}-m{m}k{s['k']}n{s['n']} on {backend}: {why}")
        form, entry = min(usable.items(), key=lambda fe: fe[1]["mean_ms"])
        timed[(m, s["k"], s["n"])] = entry["mean_ms"]
        gemms.append({**entry, "form": form, "count": s["count"], "rows": s["rows"],
                      "forms": {f: (round(e["mean_ms"], 4) if f in usable else e.get("error")
                                    or f"ran as {e.get('engine_precision')}") for f, e in tried.items()}})
    return {"floor_ms": floor_of(shapes, timed, batch, seq), "precision": precision, "gemms": gemms,
            "method": "Σ over the model's weight GEMMs of count × mean latency of a one-MatMul "
                      "model of that shape on this engine (same worker, threads and options; INT8: "
                      "the faster of float and int8 input/output per shape); attention matmuls and "
                      "non-GEMM ops left out, weights cache-hot: a lower bound"}


def _time_form(cache_dir: Path, key: str, backend: str, precision: str, form: str, m: int, k: int, n: int,
               settings: Any, *, threads: int | None, options: dict[str, Any] | None,
               timeout_s: float) -> dict[str, Any]:
    """One GEMM shape in one form, timed in a worker (or read from the cache): its entry, or
    ``{"error": ...}`` when the engine could not run it."""
    from qdqbench.engines.timing import measure_in_subprocess

    stem = f"{precision}-m{m}k{k}n{n}" + ("-int8io" if form == "int8-io" else "")
    result = cache_dir / f"{backend}-{key}-{stem}.json"
    if result.exists():
        try:
            return json.loads(result.read_text(encoding="utf-8"))
        except ValueError:
            pass  # a damaged cache entry: time it again
    model = cache_dir / f"gemm-{stem}.onnx"
    if not model.exists():
        gemm_model(model, m, k, n, precision, form=form)
    int8_in = precision == "int8" and form == "int8-io"
    feeds = cache_dir / f"gemm-x-m{m}k{k}{'-int8' if int8_in else ''}.npz"
    if not feeds.exists():
        x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
        if int8_in:  # the same values, quantized as the float-io model's QuantizeLinear does
            x = np.clip(np.round(x / (4.0 / 127)), -128, 127).astype(np.int8)
        save_atomic(feeds, lambda fh, x=x: np.savez(fh, x=x))
    try:
        stats, meta = measure_in_subprocess(backend, model, precision, feeds, settings,
                                            threads=threads, timeout_s=timeout_s, options=options)
    except BackendError as exc:
        return {"error": one_line(exc)}  # not cached: a later run tries again
    entry = {"m": m, "k": k, "n": n, "mean_ms": stats.mean, "median_ms": stats.median,
             "iterations": stats.n, "engine_precision": meta["precision"],
             "gops": 2.0 * m * k * n / (stats.mean / 1e3) / 1e9}
    write_json_atomic(result, entry)
    return entry
