"""``qdqbench doctor [SUITE]``: can this machine build and run an INT8 engine, engine by engine?

Before a six-hour nightly run, the question is whether each engine the suite names works here at
all. doctor builds a tiny random QDQBERT in code (``BertConfig`` with 2 layers, hidden 32, a
synthetic 64-token vocabulary; all three Q/DQ groups, per-channel weights, max calibration on
random token batches, exactly as the runner builds a variant), exports it with
``export.export_onnx``, and then, per engine, in a process of its own so a crash or hang in one
runtime cannot take the others down: prepares the backend for one (batch 4, seq 16) shape as the
runner would (``backends.engine_request`` for an INT8 scheme), runs one inference and compares it
with the torch fake-quant output (SQNR >= ``AGREEMENT_DB``), and times it briefly through the
worker process (``timing.measure_in_subprocess``), as a latency cell would.

One line per engine: name, status, version, device, the precision the engine reports it ran, and
the reason and fix when it did not pass. PASS: built, agreed, timed. FAIL: needed and unusable,
or installed and broken. SKIP: not needed (no suite given) and its runtime or hardware is absent.
``qdqbench doctor`` (``cli.doctor``) exits 0 when no engine FAILs (with a suite: every engine the suite needs passed), 2
otherwise; a bad suite file is 2 as well (one ``error:`` line). ``--json`` prints one JSON object.

The per-engine processes run ``python -m qdqbench.run.doctor build|check`` (an internal interface).
Importing this module imports neither torch nor any runtime.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Engine output against the torch fake-quant model on the same inputs: signal-to-noise ratio of
# the logits in dB. 20 dB = the difference carries 1% of the signal's power. Integer engines land
# at 30-50 dB on the tiny model (ONNX Runtime CPU: 41 dB here); a wrong scale or a broken kernel
# lands near or below 0.
AGREEMENT_DB = 20.0
BATCH, SEQ = 4, 16
DEFAULT_TIMEOUT_S = 300.0
GPU_FIX = "pip install 'qdqbench[gpu]'"
TORCH_CUDA_FIX = ("install a CUDA build of torch on a GPU machine "
                  "(pip install torch --index-url https://download.pytorch.org/whl/cu130)")
TORCH_CUDA = "torch-cuda"  # the torch backend on CUDA: timing.torch rows with device cuda


@dataclass
class EngineResult:
    """What doctor found for one engine."""

    engine: str
    needed: bool
    status: str  # PASS | FAIL | SKIP
    version: str = ""
    device: str = ""
    precision: str = ""
    reason: str = ""
    fix: str = ""
    sqnr_db: float | None = None
    max_abs_diff: float | None = None
    latency_mean_ms: float | None = None
    timing_method: str = ""
    detail: str = ""  # what a PASS did, when it is not an engine run (torch: the build itself)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (an infinite SQNR, identical outputs, becomes null plus a flag)."""
        data = asdict(self)
        if self.sqnr_db is not None and math.isinf(self.sqnr_db):
            data["sqnr_db"] = None
            data["info"] = {**data["info"], "outputs_identical": True}
        return data


def known_engines() -> list[str]:
    """Every engine qdqbench can run: torch, each backend plain and qualified (@fp16, @cuda), torch on CUDA."""
    from qdqbench.engines import BACKEND_NAMES, qualified_names

    engines = [b for b in BACKEND_NAMES if b != "torch"] + qualified_names()
    order = {b: i for i, b in enumerate(BACKEND_NAMES)}
    engines.sort(key=lambda n: (order.get(n.partition("@")[0], 99), "@" in n))
    return ["torch", *engines, TORCH_CUDA]


def suite_engines(suite: Any) -> list[tuple[str, bool]]:
    """(engine, needed) for a suite: its backends, and torch on CUDA when its torch rows use it.

    ``timing.torch.device: cuda`` needs CUDA; ``auto`` uses it when present, so it is checked
    then but not required.
    """
    out = [(b, True) for b in suite.backends]
    spec = getattr(suite.timing, "torch", None)
    if spec is not None and spec.device in ("cuda", "auto"):
        out.append((TORCH_CUDA, spec.device == "cuda"))
    return out


def passed(results: list[EngineResult]) -> bool:
    """Whether no engine failed (``qdqbench doctor`` exits 0 then, else 2)."""
    return not any(r.status == "FAIL" for r in results)


def format_line(r: EngineResult) -> str:
    """One line: ``engine: STATUS version, device, precision, agreement, latency`` or the reason."""
    if r.status == "PASS":
        parts = [p for p in (r.version, r.device, r.precision) if p]
        if r.sqnr_db is not None:
            parts.append(f"SQNR {_fmt_db(r.sqnr_db)} vs fake-quant (>= {AGREEMENT_DB:g} dB)")
        if r.latency_mean_ms is not None:
            parts.append(f"{r.latency_mean_ms:.3g} ms mean at b{BATCH}s{SEQ}")
        if r.detail:
            parts.append(r.detail)
        return f"{r.engine}: PASS {', '.join(parts)}"
    facts = ", ".join(p for p in (r.version, r.device, r.precision) if p)
    text = r.reason or "no reason given"
    if r.fix and r.fix not in text:
        text = f"{text}; fix: {r.fix}"
    return f"{r.engine}: {r.status} {text}" + (f" [{facts}]" if facts else "")


def _fmt_db(value: float) -> str:
    return "inf dB" if math.isinf(value) else f"{value:.1f} dB"


def summary_line(results: list[EngineResult], suite: str | None) -> str:
    """The closing line: counts, and whether the suite can run here."""
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    text = f"{counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP"
    if suite:
        failed = [r.engine for r in results if r.status == "FAIL"]
        verdict = (f"this machine can run {suite}" if not failed else
                   f"this machine cannot run {suite}: {', '.join(failed)} failed")
        return f"doctor: {text}; {verdict}"
    return f"doctor: {text} (no suite: engines whose runtime or hardware is absent are skipped)"


def check_engines(engines: list[tuple[str, bool]], *, timeout_s: float = DEFAULT_TIMEOUT_S,
                  on_result: Any = None) -> list[EngineResult]:
    """Build the tiny model once, then check each engine in its own process."""
    results: list[EngineResult] = []
    with tempfile.TemporaryDirectory(prefix="qdqbench-doctor-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        built = _child(["build", "--workdir", str(work)], work / "build.json", timeout_s)
        build_s = time.perf_counter() - t0
        for engine, needed in engines:
            if "error" in built:
                r = EngineResult(engine, needed, "FAIL", reason=f"tiny Q/DQ model build failed: {built['error']}",
                                 fix="qdqbench itself cannot quantize and export here: check torch, "
                                     "transformers and onnx (qdqbench env)")
            elif engine == "torch":
                r = EngineResult(engine, needed, "PASS", version=built.get("version", ""),
                                 device="cpu", precision="int8-fakequant", seconds=round(build_s, 2),
                                 detail=(f"the accuracy reference: built, calibrated and exported the tiny "
                                         f"Q/DQ BERT ({built.get('qdq_nodes')} Q/DQ nodes)"),
                                 info={k: v for k, v in built.items() if k != "version"})
            else:
                r = _check_engine(engine, needed, work, timeout_s)
            results.append(r)
            if on_result is not None:
                on_result(r)
    return results


def _check_engine(engine: str, needed: bool, work: Path, timeout_s: float) -> EngineResult:
    t0 = time.perf_counter()
    out = work / f"check-{engine.replace('@', '_')}.json"
    res = _child(["check", "--engine", engine, "--workdir", str(work)], out, timeout_s)
    seconds = round(time.perf_counter() - t0, 2)
    facts = {k: res.get(k, "") for k in ("version", "device", "precision")}
    if res.get("unavailable"):
        return EngineResult(engine, needed, "FAIL" if needed else "SKIP", reason=res["unavailable"],
                            fix=_fix(engine, res["unavailable"]), seconds=seconds, **facts)
    if "error" in res:
        return EngineResult(engine, needed, "FAIL", reason=res["error"], fix=_fix(engine, res["error"]),
                            seconds=seconds, info=res.get("info", {}), **facts)
    return EngineResult(engine, needed, "PASS", sqnr_db=res.get("sqnr_db"), max_abs_diff=res.get("max_abs_diff"),
                        latency_mean_ms=res.get("latency_mean_ms"), timing_method=res.get("timing_method", ""),
                        seconds=seconds, info=res.get("info", {}), **facts)


def _fix(engine: str, reason: str) -> str:
    """What to do about a reason, when the reason does not say it already."""
    if "pip install" in reason or "fix:" in reason:
        return ""
    base = engine.partition("@")[0]
    text = reason.lower()
    if "compute capability" in text:
        return (f"run {engine} on a Turing-or-newer GPU, or drop it from the suite's backends")
    if engine == TORCH_CUDA:
        return TORCH_CUDA_FIX
    if base == "tensorrt" or engine in ("onnxruntime@cuda", "onnxruntime@trt"):
        if "cuda" in text or "libnv" in text or "did not load" in text or "driver" in text:
            return f"{GPU_FIX} into a fresh environment (CUDA 13 wheels; NVIDIA driver r580 or newer)"
        return f"see the error; 'qdqbench env' lists the installed versions ({GPU_FIX} gives a known-good set)"
    return "see the error; 'qdqbench env' lists the installed versions"


def _child(argv: list[str], out: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``python -m qdqbench.run.doctor ARGV`` in its own process group; its JSON, or {"error"}."""
    cmd = [sys.executable, "-m", "qdqbench.run.doctor", *argv, "--out", str(out)]
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
    except OSError as exc:
        return {"error": f"cannot start a check process: {exc}"}
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return {"error": f"timed out after {timeout_s:g} s (hung engine build or driver?)"}
    except BaseException:  # Ctrl-C: the check runs in its own session, so stop it too
        _kill_group(proc)
        raise
    if out.exists():
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except ValueError:
            pass
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    why = lines[-1][:300] if lines else "no output"
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = str(-proc.returncode)
        return {"error": f"check process crashed ({name}): {why}"}
    return {"error": f"check process failed (exit {proc.returncode}): {why}"}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def machine_facts() -> dict[str, Any]:
    """CPU, GPU and driver from ``qdqbench.core.env`` (no heavy imports), and a one-line summary."""
    from qdqbench.core.env import cpu_info, gpu_info, versions

    cpu, gpu, ver = cpu_info(), gpu_info(), versions()
    gpu_text = f"GPU {gpu['gpu']} (driver {gpu['driver']})" if gpu.get("gpu") else "no GPU (nvidia-smi found none)"
    ort = ("onnxruntime-gpu " + ver["onnxruntime-gpu"]) if ver.get("onnxruntime-gpu") else (
        f"onnxruntime {ver['onnxruntime']}" if ver.get("onnxruntime") else "no onnxruntime")
    both = ver.get("onnxruntime") and ver.get("onnxruntime-gpu")
    summary = (f"{cpu['cpu']}, {cpu['cores']} cores; {gpu_text}; python {ver['python']}, torch {ver.get('torch')}, "
               f"{ort}, openvino {ver.get('openvino')}, tensorrt {ver.get('tensorrt')}")
    if both:
        summary += ("; WARNING: onnxruntime and onnxruntime-gpu are both installed and overwrite each other "
                    "(pip uninstall onnxruntime onnxruntime-gpu, then pip install 'qdqbench[gpu]')")
    return {"cpu": cpu, "gpu": gpu, "versions": ver, "summary": summary}


# ------------------------------------------------------------------- the per-engine processes


def _one_line(exc: BaseException) -> str:
    from qdqbench.core.errors import one_line

    # Runtime messages name themselves; only a bare exception needs its type to say anything.
    return one_line(exc, typed=not str(exc).strip(), join=True)


def build_tiny_model(work: Path) -> dict[str, Any]:
    """Build, calibrate and export the tiny QDQBERT into ``work``; facts for the torch line.

    Writes ``model.onnx`` (Q/DQ export), ``feeds.npz`` (the check inputs), ``reference.npy``
    (torch fake-quant logits on them) and ``torch-model.pt`` (the fake-quant module for torch-cuda).
    """
    import copy

    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from qdqbench.engines.torch import save_torch_artifact
    from qdqbench.quant.export import export_onnx
    from qdqbench.quant.qdqbert import QDQSettings, count_quantizers, quantize_bert
    from qdqbench.quant.quantizer import calibrating, finish_calibration
    from qdqbench.quant.recipes import apply_post_calibration

    torch.manual_seed(0)
    vocab = 64  # synthetic: ids 0-4 play [PAD] [UNK] [CLS] [SEP] [MASK], the rest are words
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=4)
    fp32 = BertForSequenceClassification._from_config(config, attn_implementation="eager").eval()
    settings = QDQSettings()  # all three groups, per-channel weights, 8 bits, as a default scheme
    model = quantize_bert(copy.deepcopy(fp32), settings)

    def feeds(batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        ids = rng.integers(5, vocab, (batch, seq), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
        return {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64),
                "token_type_ids": np.zeros((batch, seq), np.int64)}

    with torch.no_grad(), calibrating(model):
        for seed in range(8):
            model(**{k: torch.from_numpy(v) for k, v in feeds(8, SEQ, seed).items()})
    finish_calibration(model, "max")
    apply_post_calibration(model, settings)
    check = feeds(BATCH, SEQ, 1000)
    check["attention_mask"][1, SEQ - 4:] = 0  # one padded row: the mask path runs on every engine
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in check.items()}).logits.float().numpy()
    export = export_onnx(model, work / "model.onnx", {k: torch.from_numpy(v) for k, v in check.items()})
    np.savez(work / "feeds.npz", **check)
    np.save(work / "reference.npy", reference)
    save_torch_artifact(model, work / "torch-model.pt")
    return {"version": f"torch {torch.__version__}", "qdq_nodes": export.qdq_nodes,
            "quantizers": count_quantizers(model), "onnx_mb": round(export.size_mb, 3)}


def check_engine(engine: str, work: Path) -> dict[str, Any]:
    """Prepare ``engine`` on the tiny model, compare one inference, time it through the worker."""
    import numpy as np

    from qdqbench.core.results import Shape
    from qdqbench.engines import engine_request, get_backend
    from qdqbench.engines.timing import TimingSettings, measure_in_subprocess

    facts: dict[str, Any] = {}
    if engine == TORCH_CUDA:
        backend_name, artifact, options = "torch", work / "torch-model.pt", {"device": "cuda"}
        precision = "int8"
        backend = get_backend("torch")
        reason = backend.unavailable_reason() or _torch_cuda_reason()
    else:
        backend_name, artifact = engine, work / "model.onnx"
        request = engine_request(engine, "qdq")
        precision, options = request.precision, dict(request.options)
        backend = get_backend(engine)
        reason = backend.unavailable_reason()
    facts["version"] = _version(engine)
    if reason:
        return {"unavailable": reason, **facts}
    facts["device"] = _device(engine)
    with np.load(work / "feeds.npz") as npz:
        feeds = {k: npz[k] for k in npz.files}
    reference = np.load(work / "reference.npy")
    try:
        session = backend.prepare(artifact, precision, [Shape(batch=BATCH, seq=SEQ)], threads=1, **options)
        out = np.asarray(session.predict(feeds), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 — any runtime failure is this engine's one line
        return {"error": _one_line(exc), **facts}
    facts["precision"] = session.precision
    if out.shape != reference.shape:
        return {"error": f"output shape {out.shape} differs from the fake-quant model's {reference.shape}", **facts}
    noise = float(np.sum((out - reference) ** 2))
    sqnr = math.inf if noise == 0 else 10 * math.log10(float(np.sum(reference ** 2)) / noise)
    diff = float(np.abs(out - reference).max())
    info = {k: v for k, v in session.info.items() if isinstance(v, (str, int, float, bool, list, dict))}
    if not sqnr >= AGREEMENT_DB:
        return {"error": f"output disagrees with the torch fake-quant model: SQNR {_fmt_db(sqnr)} < "
                         f"{AGREEMENT_DB:g} dB (max |diff| {diff:.3g})", "info": info, **facts}
    settings = TimingSettings(warmup_s=0.0, warmup_iters=3, min_iters=10, min_duration_s=0.2, max_duration_s=10.0)
    try:
        stats, worker = measure_in_subprocess(backend_name, artifact, precision, work / "feeds.npz", settings,
                                              threads=1, timeout_s=240, options=options)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"timing in the worker process failed: {_one_line(exc)}", "info": info, **facts}
    if worker.get("precision") and worker["precision"] != session.precision:
        info["worker_precision"] = worker["precision"]
    return {"sqnr_db": sqnr, "max_abs_diff": diff, "latency_mean_ms": stats.mean, "timing_method": stats.method,
            "info": info, **facts}


def _torch_cuda_reason() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    if not torch.version.cuda:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU or driver"


def _version(engine: str) -> str:
    """The runtime's package and version, from installed metadata (no import)."""
    from importlib import metadata

    base = engine.partition("@")[0]
    names = {"onnxruntime": ("onnxruntime-gpu", "onnxruntime"), "openvino": ("openvino",),
             "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"), "torch": ("torch",),
             TORCH_CUDA: ("torch",)}.get(engine if engine == TORCH_CUDA else base, ())
    for name in names:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return ""


def _device(engine: str) -> str:
    """Where the engine runs: the CPU, or the GPU with its compute capability and CUDA."""
    base, variant = engine.partition("@")[0], engine.partition("@")[2]
    gpu = engine == TORCH_CUDA or base == "tensorrt" or variant in ("cuda", "trt")
    if not gpu:
        from qdqbench.core.env import cpu_info

        return f"cpu ({cpu_info()['cpu']})"
    try:
        import torch

        if torch.cuda.is_available():
            cc = ".".join(str(c) for c in torch.cuda.get_device_capability())
            return f"{torch.cuda.get_device_name()} (cc {cc}, torch CUDA {torch.version.cuda})"
    except Exception:  # noqa: BLE001 — the device name is a nicety; the check itself reports errors
        pass
    return "cuda:0"


def _child_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qdqbench.run.doctor",
                                description="qdqbench doctor's per-engine processes (internal).")
    sub = p.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build", help="build, calibrate and export the tiny Q/DQ BERT")
    b.add_argument("--workdir", type=Path, required=True)
    b.add_argument("--out", required=True)
    c = sub.add_parser("check", help="check one engine on the built model")
    c.add_argument("--engine", required=True)
    c.add_argument("--workdir", type=Path, required=True)
    c.add_argument("--out", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the per-engine processes: write one JSON object to ``--out``."""
    args = _child_parser().parse_args(argv)
    try:
        if args.step == "build":
            result = build_tiny_model(args.workdir)
        else:
            result = check_engine(args.engine, args.workdir)
    except Exception as exc:  # noqa: BLE001 — the parent prints one line per engine, never a trace
        result = {"error": _one_line(exc)}
    Path(args.out).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
