"""Tests for QAT: the paper's schedule from finetune.json, the lr schedule, recovery of a
deliberately bad calibration on a learnable synthetic task, and resume-from-checkpoint equality."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from qdqbench.core.errors import CalibrationError
from qdqbench.quant.qat import (
    QATError,
    QATPlan,
    batch_order,
    classification_loss,
    finetune,
    lr_at,
    regression_loss,
    train_batches,
)
from qdqbench.quant.qdqbert import QDQSettings, quantize_bert
from qdqbench.quant.quantizer import calibrating, finish_calibration, quantizers


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and on a shared machine far faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(seed: int = 0, dropout: float = 0.0):
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=dropout,
                           attention_probs_dropout_prob=dropout)
    return tf.BertForSequenceClassification._from_config(config, attn_implementation="eager").eval()


def synthetic(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Label 1 when the first token after [CLS] is below 22: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 40, (n, 8), generator=g)
    ids[:, 0] = 2
    y = (ids[:, 1] < 22).long()
    return [{"input_ids": ids[i:i + 32], "attention_mask": torch.ones_like(ids[i:i + 32]), "labels": y[i:i + 32]}
            for i in range(0, n, 32)]


def evaluate(model, batches) -> tuple[float, float]:
    """(mean loss, accuracy) in eval mode."""
    model.eval()
    losses, hits, total = [], 0, 0
    with torch.no_grad():
        for b in batches:
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            losses.append(classification_loss(out, b).item())
            hits += int((out.logits.argmax(-1) == b["labels"]).sum())
            total += len(b["labels"])
    return float(np.mean(losses)), hits / total


def calibrated(model, batches):
    q = quantize_bert(copy.deepcopy(model), QDQSettings())
    with calibrating(q), torch.no_grad():
        for b in batches[:4]:
            q(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    finish_calibration(q)
    return q


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------ schedule


def test_plan_from_finetune_json_is_ten_percent_at_one_percent_lr():
    info = {"task": "stsb", "train_examples": 5749, "epochs": 3.0, "lr": 1e-4, "batch_size": 32}
    plan = QATPlan.from_finetune(info)
    assert plan.source["original_steps"] == 180 * 3  # ceil(5749/32) = 180 per epoch
    assert plan.steps == 54 and plan.lr == pytest.approx(1e-6) and plan.schedule == "cosine"
    assert plan.batch_size == 32
    assert QATPlan.from_finetune({**info, "epochs": 1.0, "train_examples": 67349}).steps == 210  # round(210.5)
    with pytest.raises(QATError, match="train_examples"):
        QATPlan.from_finetune({"lr": 1e-4, "epochs": 1, "batch_size": 32})


def test_cosine_schedule_starts_at_lr_decays_and_never_hits_zero():
    lrs = [lr_at(s, steps=10, lr=1e-3) for s in range(10)]
    assert lrs[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0
    warm = [lr_at(s, steps=10, lr=1e-3, warmup=2) for s in range(4)]
    assert warm[:3] == pytest.approx([5e-4, 1e-3, 1e-3])
    with pytest.raises(QATError, match="schedule"):
        lr_at(0, steps=10, lr=1e-3, schedule="step")


def test_batch_order_is_a_permutation_per_epoch_and_depends_only_on_seed():
    epoch0 = [batch_order(s, 20, seed=3) for s in range(20)]
    epoch1 = [batch_order(s, 20, seed=3) for s in range(20, 40)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(20))
    assert epoch0 != epoch1  # a new draw each epoch
    assert epoch0 == [batch_order(s, 20, seed=3) for s in range(20)]
    assert epoch0 != [batch_order(s, 20, seed=4) for s in range(20)]


def test_train_batches_maps_task_labels_to_checkpoint_columns():
    from qdqbench.tasks.evaluate import Encoded

    enc = Encoded([[2, 5, 3], [2, 6, 7, 3]], [[0, 0, 0], [0, 0, 0, 0]], 0)
    out = train_batches(enc, np.array([0, 1]), 2, label_perm=np.array([1, 0]))
    (b,) = out
    assert b["input_ids"].shape == (2, 4)
    # batches are longest-first: example 1 (task label 1 -> column 0) comes first
    assert b["labels"].tolist() == [0, 1]


def test_regression_loss_is_mse_of_the_single_output():
    class Out:
        logits = torch.tensor([[1.0], [3.0]])

    assert regression_loss(Out(), {"labels": torch.tensor([1.0, 1.0])}).item() == pytest.approx(2.0)


# ------------------------------------------------------------------------------ training


def test_qat_recovers_a_deliberately_bad_calibration():
    train, held_out = synthetic(512, 1), synthetic(256, 2)
    fp32 = tiny()
    finetune(fp32, train, steps=60, lr=1e-2, seed=0, loss_fn=classification_loss)
    fp32_loss, fp32_acc = evaluate(fp32, held_out)
    assert fp32_acc > 0.95  # the task is learnt in float
    model = calibrated(fp32, train)
    amax_before = {}
    for name, q in quantizers(model):
        if not q.is_weight:
            q.set_amax(q.amax * 0.2)  # ranges 5x too small: clipping wrecks the model
        amax_before[name] = q.amax.clone()
    bad_loss, bad_acc = evaluate(model, held_out)
    assert bad_acc < fp32_acc - 0.15
    seen = []
    result = finetune(model, train, steps=15, lr=3e-3, seed=0, loss_fn=classification_loss, progress=seen.append)
    qat_loss, qat_acc = evaluate(model, held_out)
    assert qat_loss < bad_loss and qat_acc > bad_acc + 0.1
    assert [s.step for s in seen] == list(range(1, 16)) and seen[-1].steps == 15
    assert result.last_loss < result.first_loss
    for name, q in quantizers(model):  # amax fixed: a buffer, no gradient
        assert torch.equal(q.amax, amax_before[name]), name
        assert q.mode == "quantize"
    assert not model.training  # the caller's mode is restored
    assert result.to_dict()["loss_curve"]["values"] == result.losses


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path):
    train = synthetic(128, 3)
    base = calibrated(tiny(dropout=0.1), train)  # dropout: the RNG state must be restored too
    kwargs = dict(steps=7, lr=1e-3, warmup=2, seed=5, loss_fn=classification_loss, checkpoint_every=2)

    rng = torch.get_rng_state()
    whole = copy.deepcopy(base)
    full = finetune(whole, train, checkpoint_dir=tmp_path / "a", **kwargs)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is untouched

    class Interrupted(Exception):
        pass

    def stop_at_5(step):
        if step.step == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        finetune(copy.deepcopy(base), train, checkpoint_dir=tmp_path / "b", progress=stop_at_5, **kwargs)
    resumed_model = copy.deepcopy(base)
    resumed = finetune(resumed_model, train, checkpoint_dir=tmp_path / "b", **kwargs)
    assert resumed.resumed_from == 4  # the step-4 checkpoint; step 5 was lost with the interruption
    assert resumed.losses == full.losses
    a, b = state(whole), state(resumed_model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert len(list((tmp_path / "b").glob("qat-step-*.pt"))) == 2  # only the newest are kept

    # a finished run resumes to the same weights without training
    again = copy.deepcopy(base)
    done = finetune(again, train, checkpoint_dir=tmp_path / "a", **kwargs)
    assert done.resumed_from == 7 and all(torch.equal(v, state(again)[k]) for k, v in a.items())

    with pytest.raises(QATError, match="other QAT settings"):
        finetune(copy.deepcopy(base), train, checkpoint_dir=tmp_path / "a", **{**kwargs, "lr": 2e-3})


def test_qat_refuses_an_uncalibrated_model():
    model = quantize_bert(tiny(), QDQSettings())
    with pytest.raises(CalibrationError, match="QAT needs a calibrated model"):
        finetune(model, synthetic(32, 0), steps=1, lr=1e-3, loss_fn=classification_loss)


def test_non_finite_loss_is_an_error_not_a_silent_step():
    model = calibrated(tiny(), synthetic(64, 0))

    def nan_loss(outputs, batch):
        return outputs.logits.sum() * float("nan")

    with pytest.raises(QATError, match="loss is nan"):
        finetune(model, synthetic(32, 0), steps=2, lr=1e-3, loss_fn=nan_loss)
