"""Issue target: batched, length-sorted evaluation ≥ 3× faster than naive per-example evaluation.

fp32 MiniLM (the shared SST-2 checkpoint) over the SST-2 dev set (872 sentences): naive = one
forward per example; qdqbench = ``evaluate.run_batches`` (batches of 32, sorted by length, padded
to each batch's longest). Both must give the same predictions. Run:
``.venv/bin/python -m pytest benchmarks/test_eval_speed.py -s``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.mark.slow
@pytest.mark.shared_data
def test_bucketed_evaluation_is_at_least_3x_faster_than_per_example():
    ckpt, glue = SHARED / "models" / "minilm-l6-sst2", SHARED / "data" / "glue"
    if not ckpt.is_dir() or not glue.is_dir():
        pytest.skip("../shared models/data not present")
    from qdqbench.config.suite import ModelSpec
    from qdqbench.tasks import get_task, models
    from qdqbench.tasks.evaluate import encode, run_batches, torch_forward

    model, tok = models.load_model(models.resolve("m", ModelSpec(path=str(ckpt), tasks=["sst2"])), "classification")
    dev = get_task("sst2").load("dev", glue)
    encoded = encode(tok, dev, 128)
    forward = torch_forward(model, "logits")

    t0 = time.perf_counter()
    batched = run_batches(encoded, 32, forward)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    naive = []
    with torch.no_grad():
        for ids, types in zip(encoded.input_ids, encoded.token_type_ids):
            t = torch.tensor([ids])
            naive.append(model(input_ids=t, attention_mask=torch.ones_like(t),
                               token_type_ids=torch.tensor([types])).logits[0].numpy())
    t_naive = time.perf_counter() - t0
    speedup = t_naive / t_batched
    print(f"\nSST-2 dev, {len(dev)} examples: per-example {t_naive:.2f} s, batched+sorted {t_batched:.2f} s, "
          f"{speedup:.2f}x ({torch.get_num_threads()} threads)")
    assert (np.stack(naive).argmax(1) == batched.argmax(1)).all()
    assert speedup >= 3.0
