"""ONNX Runtime on the GPU: the ``onnxruntime@cuda`` / ``onnxruntime@trt`` variants.

Everything that needs no GPU runs here: the registry and ``engine_request``, provider selection
(``execution_providers``), the profile parser and the precision read back from it, the prepare
path against a stand-in ``onnxruntime`` module (a provider that silently falls back; a TensorRT
session), fitting batches to an engine profile, and a run whose GPU cells fail with one line.
Fixtures: ``ort_profile_cpu.json`` is a real ONNX Runtime 1.32 CPU profile of a 1-layer QDQBERT
export (recorded here with ``SessionOptions.enable_profiling``); ``ort_profile_trt_EDITED.json``
and ``ort_profile_cuda_EDITED.json`` are hand-edited from it (provider names changed; each file's
first event says exactly what was edited), not GPU recordings. The real GPU tests (markers ``gpu``
and ``tensorrt``) skip with their reason where onnxruntime-gpu or a GPU is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from qdqbench.core.errors import BackendError
from qdqbench.core.results import Shape
from qdqbench.engines import (
    BACKEND_NAMES,
    EngineRequest,
    check_backend_name,
    engine_request,
    get_backend,
    qualified_names,
)
from qdqbench.engines.base import predict_in_profile
from qdqbench.engines.onnxruntime import (
    GPU_PROVIDERS,
    INTEGER_KERNELS,
    OnnxRuntimeBackend,
    execution_providers,
    gpu_effective_precision,
    missing_provider_message,
    profile_shapes,
    provider_summary,
    read_profile,
)
from qdqbench.engines.tensorrt import int8_capability_problem, optimization_profile
from qdqbench.engines.timing import TimingSettings

HERE = Path(__file__).parent
CPU_PROFILE = HERE / "ort_profile_cpu.json"
TRT_PROFILE = HERE / "ort_profile_trt_EDITED.json"
CUDA_PROFILE = HERE / "ort_profile_cuda_EDITED.json"
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


# ---- registry and what the runner asks for --------------------------------------------------

def test_provider_variants_are_backends_of_their_own():
    assert BACKEND_NAMES == ("torch", "onnxruntime", "openvino", "tensorrt")
    assert {"onnxruntime@cuda", "onnxruntime@trt"} <= set(qualified_names())
    for name in ("onnxruntime@cuda", "onnxruntime@trt", "tensorrt@fp16", "openvino@bf16"):
        assert check_backend_name(name) == name
    with pytest.raises(BackendError, match="did you mean 'trt'"):
        check_backend_name("onnxruntime@tr")
    with pytest.raises(BackendError, match="onnxruntime has no @fp16 variant"):
        check_backend_name("onnxruntime@fp16")
    backend = get_backend("onnxruntime@trt")
    assert backend.name == "onnxruntime@trt" and backend.provider == "trt"
    assert get_backend("onnxruntime").name == "onnxruntime" and get_backend("onnxruntime").provider is None


def test_suite_accepts_provider_variants(make_tiny_suite):
    from qdqbench.config.suite import expand, load_suite

    suite = load_suite(make_tiny_suite(backends=("torch", "onnxruntime@cuda", "onnxruntime@trt")))
    cells = {c.id for c in expand(suite)}
    assert "tiny/sst2/int8-max/onnxruntime@trt/latency/b2s16" in cells
    assert "tiny/sst2/fp32/onnxruntime@cuda/accuracy" in cells


@pytest.mark.parametrize("name,kind,expected", [
    ("onnxruntime", "fp32", EngineRequest("fp32")),
    ("onnxruntime", "qdq", EngineRequest("int8")),
    ("onnxruntime", "ort-static", EngineRequest("int8")),
    ("onnxruntime@trt", "fp32", EngineRequest("fp32")),
    ("onnxruntime@trt", "qdq", EngineRequest("int8")),
    ("onnxruntime@cuda", "qdq", EngineRequest("int8")),
    ("tensorrt", "qdq", EngineRequest("int8")),
    ("tensorrt@fp16", "fp32", EngineRequest("fp16")),
    ("tensorrt@fp16", "qdq", EngineRequest("int8", {"float_precision": "fp16"})),
    ("openvino@bf16", "fp32", EngineRequest("bf16")),
    ("openvino@bf16", "modelopt", EngineRequest("int8", {"float_precision": "bf16"})),
])
def test_engine_request_per_variant_and_scheme_kind(name, kind, expected):
    assert engine_request(name, kind) == expected


# ---- provider selection ----------------------------------------------------------------------

def test_missing_provider_is_one_line_with_the_fix():
    msg = missing_provider_message("trt", ["CPUExecutionProvider"])
    assert msg == ("onnxruntime@trt needs onnxruntime-gpu with TensorrtExecutionProvider "
                   "(available: CPUExecutionProvider); pip install 'qdqbench[gpu]'")
    for variant in ("cuda", "trt"):
        with pytest.raises(BackendError) as err:
            execution_providers(variant, "int8", ["CPUExecutionProvider"], cache_dir=Path("/c"))
        assert str(err.value) == missing_provider_message(variant, ["CPUExecutionProvider"])
        assert "\n" not in str(err.value)


def test_cpu_backend_keeps_the_cpu_provider_even_on_a_gpu_build():
    assert execution_providers(None, "int8", GPU_BUILD) == ["CPUExecutionProvider"]
    assert execution_providers(None, "fp32", GPU_BUILD) == ["CPUExecutionProvider"]


def test_cuda_variant_providers():
    providers = execution_providers("cuda", "int8", GPU_BUILD, device_id=1)
    assert providers == [("CUDAExecutionProvider", {"device_id": 1, "use_tf32": 0}), "CPUExecutionProvider"]
    with pytest.raises(BackendError, match="onnxruntime@cuda does not run precision 'fp16'"):
        execution_providers("cuda", "fp16", GPU_BUILD)


def test_trt_variant_providers_int8_cache_and_profile(tmp_path):
    profile = optimization_profile([Shape(batch=1, seq=128), Shape(batch=8, seq=384)], INPUTS)
    providers = execution_providers("trt", "int8", GPU_BUILD, cache_dir=tmp_path, profile=profile)
    name, opts = providers[0]
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_int8_enable"] is True and opts["trt_fp16_enable"] is False
    assert opts["trt_engine_cache_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_timing_cache_enable"] is True and opts["trt_timing_cache_path"] == str(tmp_path)
    assert opts["trt_profile_min_shapes"] == "attention_mask:1x128,input_ids:1x128,token_type_ids:1x128"
    assert opts["trt_profile_opt_shapes"] == "attention_mask:8x384,input_ids:8x384,token_type_ids:8x384"
    assert opts["trt_profile_max_shapes"] == "attention_mask:8x384,input_ids:8x384,token_type_ids:8x384"
    assert providers[1] == ("CUDAExecutionProvider", {"device_id": 0, "use_tf32": 0})
    assert providers[2] == "CPUExecutionProvider"
    fp16 = execution_providers("trt", "fp16", GPU_BUILD, cache_dir=tmp_path)[0][1]
    assert fp16["trt_fp16_enable"] is True and fp16["trt_int8_enable"] is False
    assert "trt_profile_min_shapes" not in fp16  # no shapes: TensorRT EP's own dynamic handling
    # A build with TensorRT but no CUDA EP: TensorRT, then CPU.
    only = execution_providers("trt", "fp32", ["TensorrtExecutionProvider", "CPUExecutionProvider"],
                               cache_dir=tmp_path)
    assert [p if isinstance(p, str) else p[0] for p in only] == ["TensorrtExecutionProvider",
                                                                  "CPUExecutionProvider"]
    with pytest.raises(BackendError, match="engine cache folder"):
        execution_providers("trt", "int8", GPU_BUILD)


def test_profile_shapes_format():
    prof = {"input_ids": ((1, 8), (2, 16), (4, 32))}
    assert profile_shapes(prof) == {"trt_profile_min_shapes": "input_ids:1x8",
                                    "trt_profile_opt_shapes": "input_ids:2x16",
                                    "trt_profile_max_shapes": "input_ids:4x32"}


def test_int8_needs_turing_or_newer():
    assert int8_capability_problem("tensorrt", "int8", "NVIDIA H200", (9, 0)) is None
    assert int8_capability_problem("tensorrt", "int8", "Tesla T4", (7, 5)) is None
    assert int8_capability_problem("tensorrt", "fp16", "Tesla V100", (7, 0)) is None
    msg = int8_capability_problem("onnxruntime@trt", "int8", "Tesla V100-SXM2-16GB", (7, 0))
    assert msg == ("onnxruntime@trt: INT8 needs a GPU with INT8 tensor cores (compute capability >= 7.5, "
                   "Turing or newer); Tesla V100-SXM2-16GB is 7.0")


# ---- precision read back from ORT's profiler -------------------------------------------------

def test_recorded_cpu_profile_summary():
    events = read_profile(CPU_PROFILE)
    nodes = {e["name"] for e in events if e.get("cat") == "Node"}
    summary = provider_summary(events)
    assert summary["nodes"] == {"CPUExecutionProvider": len(nodes)}
    ops = summary["ops"]["CPUExecutionProvider"]
    assert ops["MatMulIntegerToFloat"] == 7 and ops["QLinearMatMul"] == 1  # ORT fused the Q/DQ MatMuls
    assert sum(ops.values()) == len(nodes)
    # As if the CUDA variant had left every node on the CPU: integer kernels, but not on the GPU.
    assert gpu_effective_precision("cuda", "int8", summary, True) == "int8 (integer kernels on CPU)"


def test_edited_fixtures_say_they_are_edited():
    for path in (TRT_PROFILE, CUDA_PROFILE):
        events = json.loads(path.read_text(encoding="utf-8"))
        assert events[0]["name"] == "HAND-EDITED" and "not recorded on a GPU" in events[0]["args"]["note"]


def test_trt_profile_summary_and_precision():
    summary = provider_summary(read_profile(TRT_PROFILE))
    assert summary["nodes"] == {"CPUExecutionProvider": 2, "TensorrtExecutionProvider": 1}
    assert summary["ops"]["CPUExecutionProvider"] == {"Shape": 2}
    assert gpu_effective_precision("trt", "int8", summary, True) == "int8 (unverified)"
    assert gpu_effective_precision("trt", "fp32", summary, False) == "fp32 (TF32 allowed)"
    assert gpu_effective_precision("trt", "fp16", summary, False) == "fp16"
    # No Q/DQ in the graph: nothing runs in INT8, whatever was asked.
    assert gpu_effective_precision("trt", "int8", summary, False) == "fp32 (TF32 allowed)"


def test_trt_precision_counts_nodes_left_outside_tensorrt():
    events = read_profile(TRT_PROFILE)
    template = next(e for e in events if e.get("cat") == "Node")
    extra = []
    for i, (op, provider) in enumerate([("DequantizeLinear", "CUDAExecutionProvider"),
                                        ("MatMul", "CUDAExecutionProvider"),
                                        ("QuantizeLinear", "CPUExecutionProvider")]):
        e = json.loads(json.dumps(template))
        e["name"] = f"/left/{i}_kernel_time"
        e["args"].update(op_name=op, provider=provider)
        extra.append(e)
    summary = provider_summary(events + extra + extra)  # a node seen twice counts once
    assert summary["nodes"]["CUDAExecutionProvider"] == 2
    assert gpu_effective_precision("trt", "int8", summary, True) == (
        "int8 (unverified); Q/DQ/MatMul nodes outside TensorRT: 1 on CPU, 2 on CUDA")


def test_cuda_profile_is_float_with_qdq():
    summary = provider_summary(read_profile(CUDA_PROFILE))
    assert set(summary["nodes"]) == {"CUDAExecutionProvider", "CPUExecutionProvider"}
    assert summary["ops"]["CUDAExecutionProvider"]["MatMul"] == 8
    assert gpu_effective_precision("cuda", "int8", summary, True) == "fp32 (Q/DQ not fused)"
    assert gpu_effective_precision("cuda", "fp32", summary, False) == "fp32"
    # The TensorRT variant on the same placement: TensorRT took nothing.
    assert gpu_effective_precision("trt", "int8", summary, True) == "fp32 (Q/DQ not fused) (TensorRT took no node)"


def test_profile_parser_ignores_noise_and_bad_files(tmp_path):
    assert provider_summary([{"cat": "Session", "name": "model_run"}, "junk",
                             {"cat": "Node", "name": "x_fence_before", "args": {}}]) == {"nodes": {}, "ops": {}}
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"traceEvents": read_profile(TRT_PROFILE)}))
    assert provider_summary(read_profile(wrapped))["nodes"]["TensorrtExecutionProvider"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(BackendError, match="bad.json"):
        read_profile(bad)


# ---- fitting accuracy batches to an engine profile -------------------------------------------

def _feeds(batch, seq):
    ids = np.arange(batch * seq, dtype=np.int64).reshape(batch, seq) % 50 + 5
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64),
            "token_type_ids": np.zeros((batch, seq), np.int64)}


def test_predict_in_profile_splits_pads_and_cuts_back():
    seen = []

    def run(chunk):  # "logits": one row per example, the row sum of its real tokens
        seen.append(chunk["input_ids"].shape)
        assert chunk["input_ids"].shape[0] >= 2 and chunk["input_ids"].shape[1] >= 8
        return (chunk["input_ids"] * chunk["attention_mask"]).sum(axis=1, keepdims=True).astype(np.float32)

    feeds = _feeds(7, 5)
    out = predict_in_profile(feeds, run, (2, 8), (4, 16), seq_output=False)
    assert seen == [(4, 8), (3, 8)]
    np.testing.assert_array_equal(out[:, 0], feeds["input_ids"].sum(axis=1))
    seen.clear()
    one = predict_in_profile(_feeds(1, 8), run, (2, 8), (4, 16), seq_output=False)
    assert seen == [(2, 8)] and one.shape == (1, 1)  # a filler row went in, not out


def test_predict_in_profile_sequence_outputs_and_limits():
    def run(chunk):  # per-token output (batch, seq, 2)
        return np.stack([chunk["input_ids"], chunk["attention_mask"]], axis=-1).astype(np.float32)

    feeds = _feeds(3, 5)
    out = predict_in_profile(feeds, run, (1, 8), (4, 16), seq_output=True)
    assert out.shape == (3, 5, 2)
    np.testing.assert_array_equal(out[..., 0], feeds["input_ids"])
    with pytest.raises(BackendError, match="sequence length 20 is longer than the engine profile allows"):
        predict_in_profile(_feeds(2, 20), run, (1, 8), (4, 16), seq_output=True)


# ---- the prepare path against a stand-in onnxruntime module ----------------------------------

@pytest.fixture(scope="module")
def qdq_model(tiny_models):
    return tiny_models["qdq"]


class _FakeORT:
    """Just enough of the onnxruntime module for ``OnnxRuntimeBackend._prepare_gpu``."""

    __version__ = "1.31.1"
    package_name = "onnxruntime-gpu"
    cuda_version = "13.0"

    def __init__(self, real, *, loads: str, profile: Path):
        self._real = real
        self.SessionOptions = real.SessionOptions
        self.GraphOptimizationLevel = real.GraphOptimizationLevel
        self.ExecutionMode = real.ExecutionMode
        self.created = []
        fake = self

        class Session:
            def __init__(self, path, so, providers, disabled_optimizers=None):
                fake.created.append({"providers": providers, "profiling": so.enable_profiling})
                names = [p if isinstance(p, str) else p[0] for p in providers]
                if loads not in names:
                    print(f"EP Error could not load {names[0]}: libnvinfer.so.10: cannot open shared object file")
                    print("Falling back to ['CPUExecutionProvider'] and retrying.")
                    self._providers = ["CPUExecutionProvider"]
                else:
                    self._providers = names[names.index(loads):]

            def get_providers(self):
                return self._providers

            def get_inputs(self):
                return [SimpleNamespace(name=n, type="tensor(int64)") for n in INPUTS]

            def get_outputs(self):
                return [SimpleNamespace(name="output", shape=["batch", "seq", 32])]

            def run(self, names, feeds):
                b, s = feeds["input_ids"].shape
                return [np.zeros((b, s, 32), np.float32)]

            def end_profiling(self):
                return str(profile)

        self.InferenceSession = Session

    def get_available_providers(self):
        return GPU_BUILD


def test_prepare_refuses_ort_silent_fallback(qdq_model, tmp_path, monkeypatch):
    import onnxruntime

    fake = _FakeORT(onnxruntime, loads="CPUExecutionProvider", profile=TRT_PROFILE)
    backend = OnnxRuntimeBackend("trt")
    with pytest.raises(BackendError) as err:
        backend._prepare_gpu(fake, qdq_model, "int8", [Shape(batch=2, seq=8)], True,
                             cache_dir=str(tmp_path), device_id=0)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("onnxruntime@trt: TensorrtExecutionProvider did not load")
    assert "libnvinfer.so.10" in msg and "fell back to CPUExecutionProvider" in msg
    assert msg.endswith("pip install 'qdqbench[gpu]'")


def test_prepare_trt_reads_providers_and_precision_from_the_profile(qdq_model, tmp_path, make_feeds):
    import onnxruntime

    fake = _FakeORT(onnxruntime, loads="TensorrtExecutionProvider", profile=TRT_PROFILE)
    backend = OnnxRuntimeBackend("trt")
    sess = backend._prepare_gpu(fake, qdq_model, "int8", [Shape(batch=2, seq=8), Shape(batch=4, seq=16)], True,
                                cache_dir=str(tmp_path), device_id=0)
    assert sess.backend == "onnxruntime@trt" and sess.precision == "int8 (unverified)"
    assert sess.info["providers_used"] == {"CPUExecutionProvider": 2, "TensorrtExecutionProvider": 1}
    assert sess.info["provider"] == "TensorrtExecutionProvider"
    assert fake.created[0]["profiling"] is True
    cache = Path(sess.info["engine_cache"])
    assert cache.parent == tmp_path and cache.is_dir()  # one folder per optimization profile
    opts = sess.info["provider_options"]["TensorrtExecutionProvider"]
    assert opts["trt_int8_enable"] is True and opts["trt_engine_cache_path"] == str(cache)
    assert opts["trt_profile_max_shapes"].startswith("attention_mask:4x16")
    # Batches outside the profile are fitted to it; the per-token output keeps the real length.
    assert sess.predict(make_feeds(7, 5)).shape == (7, 5, 32)


def test_prepare_default_cache_is_next_to_the_artifact(qdq_model):
    import onnxruntime

    fake = _FakeORT(onnxruntime, loads="TensorrtExecutionProvider", profile=TRT_PROFILE)
    sess = OnnxRuntimeBackend("trt")._prepare_gpu(fake, qdq_model, "int8", [Shape(batch=1, seq=8)], True,
                                                   cache_dir=None, device_id=0)
    assert Path(sess.info["engine_cache"]).parent == qdq_model.parent / "ort_trt_engines"


def test_prepare_cuda_reads_float_precision(qdq_model):
    import onnxruntime

    fake = _FakeORT(onnxruntime, loads="CUDAExecutionProvider", profile=CUDA_PROFILE)
    sess = OnnxRuntimeBackend("cuda")._prepare_gpu(fake, qdq_model, "int8", [Shape(batch=2, seq=8)], True,
                                                    cache_dir=None, device_id=0)
    assert sess.precision == "fp32 (Q/DQ not fused)" and sess.info["tf32"] is False
    assert fake.created[0]["providers"][0] == ("CUDAExecutionProvider", {"device_id": 0, "use_tf32": 0})


# ---- on this machine: the variants are unavailable with one line ----------------------------

def _gpu_reason(variant: str) -> str | None:
    return get_backend(f"onnxruntime@{variant}").unavailable_reason()


@pytest.mark.parametrize("variant", ["cuda", "trt"])
def test_unavailable_variant_says_why_and_the_fix(variant, qdq_model):
    reason = _gpu_reason(variant)
    if reason is None:
        pytest.skip(f"onnxruntime here has {GPU_PROVIDERS[variant]}")
    assert "\n" not in reason and reason.endswith("pip install 'qdqbench[gpu]'")
    assert reason.startswith(f"onnxruntime@{variant} needs onnxruntime-gpu")
    with pytest.raises(BackendError) as err:
        get_backend(f"onnxruntime@{variant}").prepare(qdq_model, "int8", [Shape(batch=1, seq=8)])
    assert str(err.value) == reason


@pytest.mark.slow
def test_run_with_gpu_variants_fails_those_cells_with_one_line(make_tiny_suite, tmp_path):
    if _gpu_reason("trt") is None:
        pytest.skip("onnxruntime-gpu with the TensorRT EP is installed: the cells would run")
    from qdqbench.config.suite import load_suite
    from qdqbench.core.results import load_records
    from qdqbench.run.runner import Runner

    suite = load_suite(make_tiny_suite(backends=("torch", "onnxruntime@trt")))
    summary = Runner(suite, tmp_path / "run", show_progress=False).run()
    assert summary.exit_code == 3
    records = {r.cell: r for r in load_records(tmp_path / "run")}
    engine = [r for r in records.values() if r.backend == "onnxruntime@trt"]
    assert engine and all(r.status == "failed" for r in engine)
    for r in engine:
        assert "\n" not in r.error and "Traceback" not in r.error
        assert r.error.endswith(f"onnxruntime@trt unavailable: {_gpu_reason('trt')}")
    assert records["tiny/sst2/int8-max/torch/accuracy"].status == "ok"


# ---- real GPU: onnxruntime-gpu on a CUDA machine ---------------------------------------------

def _require(variant: str) -> None:
    reason = _gpu_reason(variant)
    if reason:
        pytest.skip(f"onnxruntime@{variant} unavailable: {reason}")


@pytest.mark.gpu
def test_cuda_variant_runs_and_times(qdq_model, make_feeds):
    _require("cuda")
    import onnxruntime

    sess = get_backend("onnxruntime@cuda").prepare(qdq_model, "int8", [Shape(batch=2, seq=8)])
    assert sess.info["provider"] == "CUDAExecutionProvider"
    assert sess.info["providers_used"].get("CUDAExecutionProvider", 0) > 0
    feeds = make_feeds(2, 8)
    ref = onnxruntime.InferenceSession(str(qdq_model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    out = sess.predict(feeds)
    assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - out) ** 2)) > 20
    st = sess.time(feeds, TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0))
    assert st.n == 5 and "synchronize_outputs" in st.method


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_trt_variant_builds_int8_caches_and_times(qdq_model, tmp_path, make_feeds):
    _require("trt")
    import onnxruntime

    shapes = [Shape(batch=2, seq=8), Shape(batch=4, seq=16)]
    sess = get_backend("onnxruntime@trt").prepare(qdq_model, "int8", shapes, cache_dir=str(tmp_path))
    assert sess.info["provider"] == "TensorrtExecutionProvider"
    assert sess.info["providers_used"].get("TensorrtExecutionProvider", 0) >= 1
    assert sess.precision.startswith("int8")
    assert any(Path(sess.info["engine_cache"]).iterdir())  # the engine is cached in the run folder
    feeds = make_feeds(2, 8)
    ref = onnxruntime.InferenceSession(str(qdq_model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    out = sess.predict(feeds)
    assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - out) ** 2)) > 15
    assert sess.predict(make_feeds(7, 5)).shape == (7, 5, 32)  # fitted to the profile
    st = sess.time(feeds, TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0))
    assert st.n == 5 and "CUDA-synchronised" in st.method


def test_without_onnxruntime_each_qualified_names_its_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    assert get_backend("onnxruntime").unavailable_reason().startswith(
        "onnxruntime is not installed: pip install 'qdqbench[cpu]'")
    for variant in ("cuda", "trt"):
        assert get_backend(f"onnxruntime@{variant}").unavailable_reason() == (
            "onnxruntime-gpu is not installed: pip install 'qdqbench[gpu]'")


class _RealORTClaimingGPU:
    """The real onnxruntime module, claiming a GPU build: ``get_available_providers`` lists the CUDA
    and TensorRT EPs, which this CPU build cannot load."""

    def __init__(self, real, *, pretend_loaded: bool):
        self._real = real
        self._pretend = pretend_loaded

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_available_providers(self):
        return GPU_BUILD

    def InferenceSession(self, path, so, providers, disabled_optimizers=None):  # noqa: N802
        if not self._pretend:  # the real thing: ORT warns and goes on with the CPU
            return self._real.InferenceSession(path, so, providers=providers,
                                               disabled_optimizers=disabled_optimizers)
        sess = self._real.InferenceSession(path, so, providers=["CPUExecutionProvider"],
                                           disabled_optimizers=disabled_optimizers)
        names = [p if isinstance(p, str) else p[0] for p in providers]
        return SimpleNamespace(get_providers=lambda: names, get_inputs=sess.get_inputs,
                               get_outputs=sess.get_outputs, run=sess.run, end_profiling=sess.end_profiling)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available")
def test_real_ort_fallback_to_cpu_is_caught(qdq_model):
    import onnxruntime

    fake = _RealORTClaimingGPU(onnxruntime, pretend_loaded=False)
    with pytest.raises(BackendError, match=r"^onnxruntime@cuda: CUDAExecutionProvider did not load .*"
                                           r"fell back to CPUExecutionProvider"):
        OnnxRuntimeBackend("cuda")._prepare_gpu(fake, qdq_model, "int8", [Shape(batch=2, seq=8)], True,
                                                cache_dir=None, device_id=0)


def test_real_ort_profile_is_read_back(qdq_model, make_feeds):
    """ORT's real profiler on the CPU, behind a session that claims CUDA: the placement and the
    precision come from the profile, not from the provider list."""
    import onnxruntime

    fake = _RealORTClaimingGPU(onnxruntime, pretend_loaded=True)
    sess = OnnxRuntimeBackend("cuda")._prepare_gpu(fake, qdq_model, "int8", [Shape(batch=2, seq=8)], True,
                                                    cache_dir=None, device_id=0, threads=1)
    assert set(sess.info["providers_used"]) == {"CPUExecutionProvider"}
    cpu_ops = sess.info["ops_by_provider"]["CPUExecutionProvider"]
    assert any(cpu_ops.get(op) for op in INTEGER_KERNELS), cpu_ops
    assert sess.precision == "int8 (integer kernels on CPU)"
    feeds = make_feeds(2, 8)
    ref = onnxruntime.InferenceSession(str(qdq_model), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(sess.predict(feeds), ref, rtol=1e-5, atol=1e-5)
