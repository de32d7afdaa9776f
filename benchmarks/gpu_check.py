"""GPU check of the torch backend: CUDA-event latency (fp32, fp16 and the fake-quant variant, each
eager and as CUDA-graph replay) for MiniLM-L6 and a BERT-base shape, and fake-quant numerics on the GPU.

    python benchmarks/gpu_check.py --checkpoint DIR --glue DIR --out DIR [--device cuda] [--quick]

``--checkpoint`` is a fine-tuned MiniLM SST-2 folder (../shared/models/minilm-l6-sst2); ``--glue``
the GLUE folder holding SST-2/dev.tsv and SST-2/train.tsv. What it measures:

* accuracy of SST-2 dev on the device: fp32, fp16, and two fake-quant calibrations (max and
  99.99th percentile, linear + matmul inputs, 256 training sentences) — each calibrated on the
  device *and* on the CPU, so the amax values and the dev predictions of both can be compared
  (fake quantization must give the same model on either);
* latency through ``qdqbench.engines.torch`` (the backend the runner's worker uses): seq 128,
  batch 1/8/32, timed with CUDA events after warm-up, raw samples summarised; MiniLM with its real
  weights, BERT-base (12 layers, hidden 768) with random weights, each fake-quant variant with the
  full QDQBERT placement (linear, matmul and residual-add inputs) calibrated with max;
* one latency repeated in a fresh worker process (``measure_in_subprocess``), the way the runner
  measures, to show the in-process figures are not flattered.

Writes ``gpu_check.json`` (every figure, raw samples included) and ``gpu_check.md`` to ``--out``.
With ``--device cpu --quick`` it runs in a minute on a laptop, to check the script itself.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qdqbench.core.results import Shape  # noqa: E402
from qdqbench.engines.timing import TimingSettings, measure_in_subprocess  # noqa: E402
from qdqbench.engines.torch import TorchBackend, save_torch_artifact  # noqa: E402
from qdqbench.quant.qdqbert import QDQSettings, quantize_bert  # noqa: E402
from qdqbench.quant.quantizer import calibrating, finish_calibration, quantizers  # noqa: E402
from qdqbench.tasks import get_task  # noqa: E402
from qdqbench.tasks.evaluate import encode, run_batches, timing_feeds, torch_forward  # noqa: E402


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def calibrate(fp32, encoded_calib, device: str, method: str, groups: tuple[str, ...], **params):
    """A QDQBERT copy of ``fp32`` calibrated on ``device``; (model, {quantizer: amax})."""
    model = quantize_bert(copy.deepcopy(fp32), QDQSettings(groups=groups, calib_method=method)).to(device).eval()
    with calibrating(model):
        run_batches(encoded_calib, 32, torch_forward(model, "logits"))
    finish_calibration(model, method, **params)
    amax = {n: q.amax.detach().float().cpu().numpy() for n, q in quantizers(model) if q.mode == "quantize"}
    return model, amax


def accuracy_part(args, out: dict, folder: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    task = get_task("sst2")
    dev = task.load("dev", args.glue)
    train = task.load("train", args.glue)[: args.calib]
    if args.quick:
        dev = dev[:64]
    tok = AutoTokenizer.from_pretrained(args.checkpoint)
    enc_dev, enc_cal = encode(tok, dev, 128), encode(tok, train, 128)
    labels = np.array([e.label for e in dev])
    fp32 = AutoModelForSequenceClassification.from_pretrained(args.checkpoint).eval()

    def evaluate(model, dtype=torch.float32):
        model = model.to(args.device, dtype=dtype)
        logits = run_batches(enc_dev, 32, torch_forward(model, "logits"))
        return logits, float((np.argmax(logits, 1) == labels).mean())

    rows = {}
    ref_logits, acc = evaluate(copy.deepcopy(fp32))
    rows["fp32"] = {"accuracy": acc}
    cpu_logits = run_batches(enc_dev, 32, torch_forward(fp32, "logits"))
    rows["fp32"]["agreement_with_cpu"] = float((np.argmax(cpu_logits, 1) == np.argmax(ref_logits, 1)).mean())
    rows["fp32"]["max_abs_logit_diff_vs_cpu"] = float(np.abs(cpu_logits - ref_logits).max())
    if args.device == "cuda":
        logits, acc = evaluate(copy.deepcopy(fp32), torch.float16)
        rows["fp16"] = {"accuracy": acc,
                        "agreement_with_fp32": float((np.argmax(logits, 1) == np.argmax(ref_logits, 1)).mean())}
    for name, method, params in (("int8-max", "max", {}), ("int8-p99.99", "percentile", {"percentile": 99.99})):
        t0 = time.perf_counter()
        dev_model, dev_amax = calibrate(fp32, enc_cal, args.device, method, ("linear", "matmul"), **params)
        calib_s = time.perf_counter() - t0
        cpu_model, cpu_amax = calibrate(fp32, enc_cal, "cpu", method, ("linear", "matmul"), **params)
        rel = max(float(np.max(np.abs(dev_amax[k] - cpu_amax[k]) / np.maximum(np.abs(cpu_amax[k]), 1e-12)))
                  for k in cpu_amax)
        logits, acc = evaluate(dev_model)
        cpu_q = run_batches(enc_dev, 32, torch_forward(cpu_model, "logits"))
        rows[name] = {"accuracy": acc, "drop_pt": 100 * (rows["fp32"]["accuracy"] - acc),
                      "cpu_fakequant_accuracy": float((np.argmax(cpu_q, 1) == labels).mean()),
                      "calibration_s_on_device": calib_s, "quantizers": len(dev_amax),
                      "max_rel_amax_diff_device_vs_cpu": rel,
                      "agreement_with_cpu_fakequant": float((np.argmax(cpu_q, 1) == np.argmax(logits, 1)).mean()),
                      "max_abs_logit_diff_vs_cpu_fakequant": float(np.abs(cpu_q - logits).max())}
        _say(f"accuracy {name}: {acc:.4f}, amax device vs cpu max rel diff {rel:.2e}")
    out["accuracy"] = {"task": "sst2 dev", "examples": len(dev), "calibration_examples": len(train), "rows": rows}


def _bert_base(num_layers: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=768, num_hidden_layers=num_layers, num_attention_heads=12,
                     intermediate_size=3072, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def latency_part(args, out: dict, folder: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.checkpoint)
    texts = [e.text_a for e in get_task("sst2").load("dev", args.glue)]
    seq = 32 if args.quick else 128
    batches = (1, 2) if args.quick else (1, 8, 32)
    settings = (TimingSettings(warmup_s=0.0, warmup_iters=2, min_iters=3, min_duration_s=0.0) if args.quick else
                TimingSettings(warmup_s=0.3, warmup_iters=10, min_iters=100, min_duration_s=1.0, max_duration_s=10.0))
    models = {"minilm-l6": AutoModelForSequenceClassification.from_pretrained(args.checkpoint).eval(),
              "bert-base-shape": _bert_base(2 if args.quick else 12)}
    backend, rows = TorchBackend(), []
    for mname, fp32 in models.items():
        calib_feeds = timing_feeds(tok, texts[200:], 8, seq)
        qdq = quantize_bert(copy.deepcopy(fp32), QDQSettings()).eval()
        with calibrating(qdq), torch.no_grad():
            qdq(**{k: torch.from_numpy(v) for k, v in calib_feeds.items()})
        finish_calibration(qdq)
        paths = {"fp32": save_torch_artifact(fp32, folder / f"{mname}-fp32.pt"),
                 "int8": save_torch_artifact(qdq, folder / f"{mname}-qdq.pt")}
        modes = [("fp32", "fp32", False), ("int8", "int8", False)]
        if args.device == "cuda":
            modes = [("fp32", "fp32", False), ("fp32", "fp32", True), ("fp16", "fp32", False),
                     ("fp16", "fp32", True), ("int8", "int8", False), ("int8", "int8", True)]
        for batch in batches:
            feeds = timing_feeds(tok, texts, batch, seq)
            np.savez(folder / f"{mname}-b{batch}.npz", **feeds)
            for precision, artifact, graph in modes:
                sess = backend.prepare(paths[artifact], precision, [Shape(batch=batch, seq=seq)],
                                       threads=args.threads, device=args.device, cuda_graph=graph)
                st = sess.time(feeds, settings)
                row = {"model": mname, "batch": batch, "seq": seq, "precision": sess.precision,
                       "cuda_graph": graph, "mean_ms": st.mean, "median_ms": st.median,
                       "p90_ms": st.percentile(90), "p99_ms": st.percentile(99), "cov": st.cov,
                       "throughput": st.throughput, "iterations": st.n, "method": st.method,
                       "extra": st.extra, "samples_ms": st.samples_ms}
                rows.append(row)
                _say(f"{mname} b{batch} {sess.precision}{' graph' if graph else ''}: "
                     f"mean {st.mean:.3f} ms, p99 {st.percentile(99):.3f}, CoV {100 * st.cov:.1f}%, "
                     f"{st.throughput:.0f} seq/s")
                del sess
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    out["latency"] = rows
    out["timing_settings"] = settings.to_dict()

    # The runner's path: one figure again from a fresh worker process.
    b = batches[-1]
    precision = "fp16" if args.device == "cuda" else "fp32"
    stats, engine = measure_in_subprocess("torch", folder / "minilm-l6-fp32.pt", precision,
                                          folder / f"minilm-l6-b{b}.npz", settings, threads=args.threads,
                                          options={"device": args.device})
    in_process = next(r for r in rows if r["model"] == "minilm-l6" and r["batch"] == b
                      and r["precision"] == precision and not r["cuda_graph"])
    out["worker_check"] = {"model": "minilm-l6", "batch": b, "precision": engine["precision"],
                           "worker_mean_ms": stats.mean, "in_process_mean_ms": in_process["mean_ms"],
                           "method": stats.method}
    _say(f"worker process: minilm-l6 b{b} {precision} mean {stats.mean:.3f} ms "
         f"(in-process {in_process['mean_ms']:.3f} ms)")


def markdown(out: dict) -> str:
    env = out["environment"]
    lines = [f"# GPU check — {env.get('gpu_name') or env['device']}", "",
             f"torch {env['torch']}, CUDA {env.get('cuda')}, TF32 matmul {env.get('tf32_matmul')}; "
             f"{out.get('timing_settings')}", ""]
    acc = out.get("accuracy")
    if acc:
        lines += [f"## Accuracy on the device ({acc['task']}, {acc['examples']} examples)", "",
                  "| variant | accuracy | notes |", "|---|---:|---|"]
        for name, r in acc["rows"].items():
            notes = ", ".join(f"{k} {v:.4g}" for k, v in r.items() if k != "accuracy")
            lines.append(f"| {name} | {100 * r['accuracy']:.2f} | {notes} |")
        lines.append("")
    lines += ["## Latency (mean / p99 ms, each row's method in gpu_check.json; seq/s from wall time)", "",
              "| model | batch | precision | graph | mean | p99 | CoV | seq/s |",
              "|---|---:|---|---|---:|---:|---:|---:|"]
    for r in out.get("latency", []):
        lines.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {'yes' if r['cuda_graph'] else ''} | "
                     f"{r['mean_ms']:.3f} | {r['p99_ms']:.3f} | {100 * r['cov']:.1f}% | {r['throughput']:.0f} |")
    w = out.get("worker_check")
    if w:
        lines += ["", f"Worker process ({w['model']} b{w['batch']} {w['precision']}): {w['worker_mean_ms']:.3f} ms "
                      f"vs in-process {w['in_process_mean_ms']:.3f} ms."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--glue", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--calib", type=int, default=256, help="training sentences for calibration")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    p.add_argument("--skip-accuracy", action="store_true")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"device": args.device, "torch": torch.__version__, "python": platform.python_version(),
           "cuda": torch.version.cuda, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    if args.device == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name()
        env["compute_capability"] = list(torch.cuda.get_device_capability())
    out: dict = {"environment": env, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _say(f"environment: {env}")
    folder = args.out / "artifacts"
    folder.mkdir(exist_ok=True)
    parts = ([("latency", latency_part)] if args.skip_accuracy
             else [("accuracy", accuracy_part), ("latency", latency_part)])
    try:
        for name, part in parts:
            try:
                part(args, out, folder)
            except Exception:  # one failing part must not lose the other's figures
                out.setdefault("errors", {})[name] = traceback.format_exc()
                _say(f"{name} part failed:\n{out['errors'][name]}")
    finally:
        (args.out / "gpu_check.json").write_text(json.dumps(out, indent=1, default=float), encoding="utf-8")
        (args.out / "gpu_check.md").write_text(markdown(out), encoding="utf-8")
        for f in folder.glob("*"):
            f.unlink()
        folder.rmdir()
    print(markdown(out))
    return 1 if out.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
