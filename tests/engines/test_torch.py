"""Tests for the torch backend: saved eager and fake-quant modules, precisions, errors, CPU timing
in-process and in a worker process, and (with a GPU) CUDA-event and CUDA-graph timing."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from qdqbench.core.errors import BackendError  # noqa: E402
from qdqbench.core.results import Shape  # noqa: E402
from qdqbench.engines import get_backend  # noqa: E402
from qdqbench.engines.timing import TimingSettings, measure_in_subprocess  # noqa: E402
from qdqbench.engines.torch import enabled_quantizer_count, pick_device, save_torch_artifact  # noqa: E402

FAST = TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=5, min_duration_s=0.0)
SHAPES = [Shape(batch=2, seq=12)]


def _feeds(batch: int = 2, seq: int = 12, vocab: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def models(tiny_checkpoint, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    from qdqbench.quant.qdqbert import QDQSettings, quantize_bert
    from qdqbench.quant.quantizer import calibrating, finish_calibration

    fp32 = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    qdq = quantize_bert(copy.deepcopy(fp32), QDQSettings())
    with calibrating(qdq), torch.no_grad():
        for seed in range(3):
            rng = np.random.default_rng(seed)
            ids = torch.from_numpy(rng.integers(5, 40, size=(4, 12), dtype=np.int64))
            qdq(input_ids=ids, attention_mask=torch.ones_like(ids))
    finish_calibration(qdq)
    qdq.eval()
    d = tmp_path_factory.mktemp("torch_artifacts")
    return {"fp32": fp32, "qdq": qdq,
            "fp32_path": save_torch_artifact(fp32, d / "fp32.pt"),
            "qdq_path": save_torch_artifact(qdq, d / "qdq.pt")}


def _direct(model, feeds) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()


def test_fp32_predict_matches_the_module(models):
    sess = get_backend("torch").prepare(models["fp32_path"], "fp32", SHAPES, threads=1, device="cpu")
    assert sess.backend == "torch" and sess.precision == "fp32"
    assert sess.info["device"] == "cpu" and sess.info["dtype"] == "float32"
    assert sess.info["fake_quantizers"] == 0 and sess.info["threads"] == 1
    feeds = _feeds()
    out = sess.predict(feeds)
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_array_equal(out, _direct(models["fp32"], feeds))


def test_int8_runs_the_fake_quant_variant_and_says_so(models):
    sess = get_backend("torch").prepare(models["qdq_path"], "int8", SHAPES, threads=1, device="cpu")
    assert sess.precision == "int8-fakequant"
    assert sess.info["fake_quantizers"] == enabled_quantizer_count(models["qdq"]) > 0
    feeds = _feeds()
    out = sess.predict(feeds)
    np.testing.assert_array_equal(out, _direct(models["qdq"], feeds))
    # The fake quantizers are live in the loaded module: its outputs differ from fp32's.
    assert np.abs(out - _direct(models["fp32"], feeds)).max() > 0


def test_precision_must_match_the_artifact(models):
    backend = get_backend("torch")
    with pytest.raises(BackendError, match="no enabled fake quantizers"):
        backend.prepare(models["fp32_path"], "int8", SHAPES, device="cpu")
    with pytest.raises(BackendError, match="enabled fake quantizers; ask for int8"):
        backend.prepare(models["qdq_path"], "fp32", SHAPES, device="cpu")
    with pytest.raises(BackendError, match="fp16 runs only on cuda"):
        backend.prepare(models["fp32_path"], "fp16", SHAPES, device="cpu")
    with pytest.raises(BackendError, match="does not run precision 'int4'"):
        backend.prepare(models["fp32_path"], "int4", SHAPES, device="cpu")
    with pytest.raises(BackendError, match="unknown options"):
        backend.prepare(models["fp32_path"], "fp32", SHAPES, device="cpu", engine="x")


def test_bf16_on_cpu_is_close_to_fp32(models):
    sess = get_backend("torch").prepare(models["fp32_path"], "bf16", SHAPES, device="cpu")
    assert sess.precision == "bf16" and sess.info["dtype"] == "bfloat16"
    feeds = _feeds()
    ref = _direct(models["fp32"], feeds)
    out = sess.predict(feeds)
    assert not np.array_equal(out, ref)
    np.testing.assert_allclose(out, ref, atol=0.1)


def test_bad_artifacts_are_one_line_errors(tmp_path, models):
    backend = get_backend("torch")
    with pytest.raises(BackendError, match="torch artifact not found: .*missing.pt"):
        backend.prepare(tmp_path / "missing.pt", "fp32", SHAPES)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="cannot load torch artifact .*junk.pt") as err:
        backend.prepare(junk, "fp32", SHAPES)
    assert "\n" not in str(err.value)
    state = tmp_path / "state.pt"
    torch.save(models["fp32"].state_dict(), state)
    with pytest.raises(BackendError, match="not a qdqbench torch artifact"):
        backend.prepare(state, "fp32", SHAPES)


def test_eager_attention_models_are_timed_with_sdpa(tiny_checkpoint, tmp_path):
    # The runner loads checkpoints with eager attention (for export); the torch rows use sdpa.
    from transformers import AutoModelForSequenceClassification

    eager = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint, attn_implementation="eager").eval()
    path = save_torch_artifact(eager, tmp_path / "eager.pt")
    sess = get_backend("torch").prepare(path, "fp32", SHAPES, device="cpu")
    assert sess.info["attn_implementation"] == "sdpa"
    feeds = _feeds()
    feeds["attention_mask"][1, 8:] = 0  # padding: both attention paths must mask alike
    np.testing.assert_allclose(sess.predict(feeds), _direct(eager, feeds), atol=1e-5)


def test_device_choice():
    assert pick_device("auto", False) == "cpu"
    assert pick_device("auto", True) == "cuda"
    assert pick_device("cpu", True) == "cpu"
    with pytest.raises(BackendError, match="torch.cuda.is_available"):
        pick_device("cuda", False)
    with pytest.raises(BackendError, match="auto, cpu or cuda"):
        pick_device("gpu", True)


def test_cpu_time_keeps_raw_samples_and_names_the_method(models):
    sess = get_backend("torch").prepare(models["qdq_path"], "int8", SHAPES, threads=1, device="cpu")
    stats = sess.time(_feeds(), FAST)
    assert stats.n >= 5 and stats.batch == 2 and stats.seq == 12
    assert all(s > 0 for s in stats.samples_ms)
    assert "perf_counter_ns" in stats.method and "torch, CPU" in stats.method


def test_worker_process_times_a_saved_module(models, tmp_path):
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, **_feeds())
    stats, engine = measure_in_subprocess("torch", models["qdq_path"], "int8", feeds, FAST, threads=1,
                                          options={"device": "cpu"})
    assert engine["precision"] == "int8-fakequant"
    assert engine["info"]["threads"] == 1 and engine["info"]["device"] == "cpu"
    assert stats.n >= 5 and stats.throughput > 0


@pytest.mark.parametrize("which, precision", [("fp32_path", "fp32"), ("qdq_path", "int8")])
def test_op_profile_from_torch_profiler(models, which, precision):
    sess = get_backend("torch").prepare(models[which], precision, SHAPES, threads=1, device="cpu")
    out = sess.op_profile(_feeds(), 2, None)
    assert out["status"] == "ok" and out["iterations"] == 2 and out["total_ms"] > 0
    cats = out["by_category"]
    assert cats["matmul"] > 0 and cats["layernorm"] > 0  # aten::addmm, aten::native_layer_norm
    assert cats["attention"] + cats["softmax"] > 0
    assert {o["precision"] for o in out["ops"]} == {sess.precision}


@pytest.mark.gpu
def test_cuda_event_and_graph_timing(models):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the torch backend's GPU timing needs one")
    backend = get_backend("torch")
    feeds = _feeds()
    for precision, path in (("fp32", "fp32_path"), ("fp16", "fp32_path"), ("int8", "qdq_path")):
        sess = backend.prepare(models[path], precision, SHAPES, device="cuda")
        assert sess.info["device"] == "cuda" and sess.info["gpu_name"]
        out = sess.predict(feeds)
        ref = _direct(models["fp32" if precision != "int8" else "qdq"], feeds)
        np.testing.assert_allclose(out, ref, atol=5e-2 if precision == "fp16" else 1e-3)
        stats = sess.time(feeds, FAST)
        assert "CUDA events" in stats.method and stats.n >= 5
        assert "host_latency_mean_ms" in stats.extra
    # Graph capture fails on any host synchronisation: the fake-quant forward must have none.
    for precision, path in (("fp16", "fp32_path"), ("int8", "qdq_path")):
        graph = backend.prepare(models[path], precision, SHAPES, device="cuda", cuda_graph=True)
        stats = graph.time(feeds, FAST)
        assert "CUDA-graph replay" in stats.method and stats.n >= 5


@pytest.mark.gpu
def test_fake_quantize_is_bit_exact_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from qdqbench.quant.quantizer import FakeQuantize

    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 3
    scale = torch.tensor(2.5 / 127)
    cpu = FakeQuantize.apply(x, scale, -128, 127, None, False)
    gpu = FakeQuantize.apply(x.cuda(), scale.cuda(), -128, 127, None, False).cpu()
    assert torch.equal(cpu, gpu)
