"""ONNX file sizes of MiniLM-L6 SST-2: fp32, INT8 Q/DQ with float weights, with int8 weights, with
int8 weights and an int8 word-embedding table, and ONNX Runtime's quantize_static (qdq format).

Also checks that the int8-weight file computes exactly what the float-weight file computes (ONNX
Runtime, graph optimizations off) on 64 dev sentences. Usage:
``.venv/bin/python benchmarks/onnx_size.py [--shared ../shared] [--out /tmp/onnx-size]``.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    ap.add_argument("--out", default="/tmp/onnx-size")
    args = ap.parse_args()
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from qdqbench.quant.export import check_qdq_structure, export_onnx
    from qdqbench.quant.peer_builders import build_peer_onnx
    from qdqbench.quant.qdqbert import QDQSettings, quantize_bert
    from qdqbench.quant.quantizer import calibrating, finish_calibration
    from qdqbench.tasks import get_task
    from qdqbench.tasks.evaluate import encode, torch_forward

    shared, out = Path(args.shared).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = shared / "models" / "minilm-l6-sst2"
    task = get_task("sst2")
    tok = AutoTokenizer.from_pretrained(str(folder))
    fp32 = AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager",
                                                              dtype=torch.float32).eval()
    train = task.load("train", shared / "data" / "glue")
    calib = encode(tok, [train[i] for i in range(64)], 128)
    dev = encode(tok, task.load("dev", shared / "data" / "glue")[:64], 128)
    _, sample = dev.batches(2)[0]
    sample = {k: torch.from_numpy(v) for k, v in sample.items()}
    sizes = {"fp32": export_onnx(fp32, out / "fp32.onnx", sample).size_mb}
    for name, emb in (("int8", False), ("int8-emb", True)):
        model = quantize_bert(copy.deepcopy(fp32), QDQSettings(quantize_embeddings=emb))
        with calibrating(model), torch.no_grad():
            for _, f in calib.batches(32):
                torch_forward(model, "logits")(f)
        finish_calibration(model)
        if not emb:
            sizes["int8 float weights"] = export_onnx(model, out / "int8-float.onnx", sample, weights="float").size_mb
        info = export_onnx(model, out / f"{name}.onnx", sample)
        sizes[name] = info.size_mb
        check = check_qdq_structure(info.path, model=model)
        print(name, "Q/DQ:", info.op_counts.get("QuantizeLinear"), info.op_counts.get("DequantizeLinear"),
              "pairs", check.pairs, "ok" if check.ok else check.problems[:3])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    a, b = (ort.InferenceSession(str(out / p), so, providers=["CPUExecutionProvider"])
            for p in ("int8-float.onnx", "int8.onnx"))
    same = all(np.array_equal(a.run(None, f)[0], b.run(None, f)[0]) for _, f in dev.batches(16))
    print("int8 weights bit-exact with float weights (ORT_DISABLE_ALL, 64 dev sentences):", same)
    facts = build_peer_onnx("ort-static", {}, out / "fp32.onnx", out / "ort-static.onnx",
                            calibration_feeds=(f for _, f in calib.batches(16)))
    sizes["ort quantize_static"] = facts["size_mb"]
    print(json.dumps({k: round(v, 2) for k, v in sizes.items()}, indent=1))


if __name__ == "__main__":
    main()
