"""Quantization-aware fine-tuning (QAT) of a calibrated fake-quant QDQBERT variant.

Wu et al. 2020 (§5.3) fall back to QAT when neither calibration nor partial quantization reaches
the accuracy bound: fine-tune the calibrated model with its Q/DQ pairs in the graph for about 10%
of the original fine-tuning schedule, starting at about 1% of the original learning rate, with
cosine annealing. ``QATPlan.from_finetune`` derives those numbers from a checkpoint's
``finetune.json`` (``lr``, ``epochs``, ``batch_size``, ``train_examples``); ``finetune`` runs it.

What is trained: every parameter (weights, biases, LayerNorm, embeddings, head). Every amax stays
fixed: it is a buffer, never a parameter, and ``FakeQuantize`` gives the input a straight-through
gradient (zero where the value was clipped) and the scale none. Weight amaxes are therefore *not*
refreshed after QAT (a weight that grew past its range stays clipped, as it was trained); calling
``finish_calibration`` on a fine-tuned model would undo that, so the runner must not.

Reproducibility: the batch order of epoch ``e`` is a permutation drawn from ``(seed, e)`` only, and
dropout draws from torch's global generator, seeded with ``seed`` inside ``torch.random.fork_rng``
(so the caller's RNG state is the same afterwards). A checkpoint holds the model and optimizer
state, the step, the losses so far and the RNG state; ``finetune`` with the same settings and
``checkpoint_dir`` resumes from the latest one and ends with bit-identical weights on the same
device and software (tested on CPU). The learning rate is a pure function of the step, so there
is no scheduler state to save.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qdqbench.core.errors import CalibrationError, QdqbenchError
from qdqbench.core.files import save_atomic
from qdqbench.quant.quantizer import quantizers

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
SCHEDULES = ("cosine", "linear", "constant")
_CHECKPOINT = re.compile(r"qat-step-(\d+)\.pt$")


class QATError(QdqbenchError):
    """QAT cannot run or diverged (non-finite loss), or a checkpoint does not fit this run."""


@dataclass(frozen=True)
class QATPlan:
    """Steps and learning rate of a QAT run, and the original schedule they were derived from."""

    steps: int
    lr: float
    warmup: int = 0
    schedule: str = "cosine"
    batch_size: int | None = None  # the batch size the steps assume (the original one)
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_finetune(cls, info: Mapping[str, Any], *, fraction: float = 0.1, lr_fraction: float = 0.01,
                      warmup: int = 0, schedule: str = "cosine") -> QATPlan:
        """The paper's defaults from a ``finetune.json``: 10% of its steps at 1% of its lr.

        Original steps = ceil(train_examples / batch_size) per epoch × epochs (fractional epochs
        rounded up). Train with the same batch size so that "10%" means a tenth of the examples.
        Where the fine-tuning counted windows (SQuAD: ``train_features``, several per long
        context), those are what its batches held, so they count instead of the questions.
        """
        missing = [k for k in ("lr", "epochs", "batch_size", "train_examples") if k not in info]
        if missing:
            raise QATError(f"finetune info lacks {missing}; needs lr, epochs, batch_size, train_examples")
        lr, epochs = float(info["lr"]), float(info["epochs"])
        batch_size, examples = int(info["batch_size"]), int(info.get("train_features") or info["train_examples"])
        if lr <= 0 or epochs <= 0 or batch_size < 1 or examples < 1:
            raise QATError(f"finetune info has a non-positive value: {dict(info)}")
        original = math.ceil(math.ceil(examples / batch_size) * epochs)
        steps = max(1, round(fraction * original))
        return cls(steps=steps, lr=lr * lr_fraction, warmup=warmup, schedule=schedule, batch_size=batch_size,
                   source={"lr": lr, "epochs": epochs, "batch_size": batch_size, "train_examples": examples,
                           "original_steps": original, "fraction": fraction, "lr_fraction": lr_fraction})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the result record."""
        return asdict(self)


@dataclass(frozen=True)
class QATStep:
    """What the progress callback receives after each optimizer step (``step`` counts from 1)."""

    step: int
    steps: int
    loss: float
    lr: float


@dataclass
class QATResult:
    """Summary of a QAT run (the model itself was fine-tuned in place)."""

    steps: int
    lr: float
    warmup: int
    schedule: str
    seed: int
    batches: int
    losses: list[float]  # one per step, including the steps before a resume
    resumed_from: int | None  # step of the checkpoint it resumed from
    checkpoints: list[str]
    seconds: float  # this call only

    @property
    def first_loss(self) -> float | None:
        """Loss of the first step."""
        return self.losses[0] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        """Loss of the last step."""
        return self.losses[-1] if self.losses else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: settings, first/last loss and a loss curve of at most 200 points."""
        stride = max(1, math.ceil(len(self.losses) / 200))
        return {
            "steps": self.steps, "lr": self.lr, "warmup": self.warmup, "schedule": self.schedule,
            "seed": self.seed, "batches": self.batches, "first_loss": self.first_loss,
            "last_loss": self.last_loss, "loss_curve": {"stride": stride, "values": self.losses[::stride]},
            "resumed_from": self.resumed_from, "checkpoints": len(self.checkpoints),
            "seconds": round(self.seconds, 3),
        }


def lr_at(step: int, *, steps: int, lr: float, warmup: int = 0, schedule: str = "cosine") -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then the schedule.

    Cosine goes from ``lr`` at the first step after warm-up towards 0 at ``steps`` (never reaching
    it, so the last step still learns).
    """
    if schedule not in SCHEDULES:
        raise QATError(f"unknown schedule '{schedule}' (one of {', '.join(SCHEDULES)})")
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "linear":
        return lr * (1.0 - t)
    return lr


def batch_order(step: int, n_batches: int, seed: int) -> int:
    """Index of the batch used at ``step``: epoch ``e`` walks a permutation drawn from (seed, e)."""
    epoch, pos = divmod(step, n_batches)
    return int(np.random.default_rng([seed, epoch]).permutation(n_batches)[pos])


def classification_loss(outputs, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of ``outputs.logits`` against ``batch['labels']`` (checkpoint class ids)."""
    return nn.functional.cross_entropy(outputs.logits.float(), batch["labels"].long())


def regression_loss(outputs, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the single regression output against ``batch['labels']``."""
    return nn.functional.mse_loss(outputs.logits.float().squeeze(-1), batch["labels"].float())


def qa_loss(outputs, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """run_qa's loss: the mean of the start and end cross-entropies of ``outputs.qa_logits``
    (batch, seq, 2) against ``batch['labels']`` (batch, 2) gold token positions."""
    logits, labels = outputs.qa_logits.float(), batch["labels"].long()
    return (nn.functional.cross_entropy(logits[..., 0], labels[:, 0])
            + nn.functional.cross_entropy(logits[..., 1], labels[:, 1])) / 2


# A task's training data names its loss (``GlueTraining.loss``, ``SquadTraining.loss``).
LOSSES = {"classification": classification_loss, "regression": regression_loss, "question-answering": qa_loss}


def train_batches(encoded, labels: np.ndarray, batch_size: int,
                  label_perm: np.ndarray | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds plus ``labels`` per batch from an ``evaluate.Encoded`` and task-order labels.

    ``label_perm`` is ``glue.align_labels``'s permutation (``logits[:, perm]`` is task order), so
    task class ``j`` is the checkpoint's column ``perm[j]``: the labels are mapped to that column.
    """
    labels = np.asarray(labels)
    if label_perm is not None:
        labels = np.asarray(label_perm)[labels.astype(np.int64)]
    out = []
    for idx, feeds in encoded.batches(batch_size):
        out.append({**feeds, "labels": labels[idx]})
    return out


def finetune(
    model: nn.Module,
    train_batches: Sequence[Mapping[str, Any]],
    *,
    steps: int,
    lr: float,
    warmup: int = 0,
    schedule: str = "cosine",
    seed: int = 0,
    loss_fn: Callable[[Any, Mapping[str, torch.Tensor]], torch.Tensor],
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    progress: Callable[[QATStep], None] | None = None,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    input_keys: Sequence[str] = INPUT_NAMES,
) -> QATResult:
    """Fine-tune a calibrated fake-quant model in place with AdamW; amaxes stay fixed.

    ``train_batches`` are dicts of arrays/tensors (the model's inputs named in ``input_keys``,
    plus whatever ``loss_fn(outputs, batch)`` needs, e.g. ``labels``). With ``checkpoint_dir`` a
    checkpoint is written every ``checkpoint_every`` steps (default: a tenth of the run) and at
    the end, and a run with the same settings resumes from the latest one.
    """
    if steps < 1:
        raise QATError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise QATError(f"lr must be positive, got {lr}")
    if not 0 <= warmup <= steps:
        raise QATError(f"warmup must be in [0, steps], got {warmup}")
    if schedule not in SCHEDULES:
        raise QATError(f"unknown schedule '{schedule}' (one of {', '.join(SCHEDULES)})")
    batches = list(train_batches)
    if not batches:
        raise QATError("no training batches")
    for name, q in quantizers(model):
        if q.mode == "calibrate":
            raise QATError(f"quantizer '{name}' is still calibrating; finish the calibration first")
        if q.mode == "quantize" and not q.is_calibrated:
            raise CalibrationError(f"QAT needs a calibrated model: quantizer '{name}' has no usable amax")
    every = checkpoint_every or max(1, steps // 10)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = {"steps": steps, "lr": lr, "warmup": warmup, "schedule": schedule, "seed": seed,
                   "batches": len(batches), "weight_decay": weight_decay,
                   "max_grad_norm": max_grad_norm}
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    optimizer = _adamw(model, lr, weight_decay)
    was_training = model.training
    t0 = time.perf_counter()
    losses: list[float] = []
    written: list[str] = []
    resumed_from = None
    # fork_rng: dropout needs the global generator; the caller's RNG state is restored on exit.
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(seed)
        start = 0
        latest = _latest_checkpoint(ckdir) if ckdir is not None else None
        if latest is not None:
            state = torch.load(latest, map_location=device, weights_only=True)
            if state.get("fingerprint") != fingerprint:
                raise QATError(f"checkpoint {latest} was made with other QAT settings "
                               f"({state.get('fingerprint')}, this run: {fingerprint}); use another checkpoint_dir")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = resumed_from = int(state["step"])
            losses = [float(x) for x in state["losses"]]
            torch.set_rng_state(state["rng_cpu"])
            if cuda and state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(state["rng_cuda"], device)
        model.train()
        try:
            for step in range(start, steps):
                step_lr = lr_at(step, steps=steps, lr=lr, warmup=warmup, schedule=schedule)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
                batch = {k: _tensor(v, device) for k, v in batches[batch_order(step, len(batches), seed)].items()}
                outputs = model(**{k: batch[k] for k in input_keys if k in batch})
                loss = loss_fn(outputs, batch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise QATError(f"QAT loss is {value} at step {step + 1} (lr {step_lr:.3g}); "
                                   "lower the learning rate or check the calibration")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm:
                    nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
                optimizer.step()
                losses.append(value)
                done = step + 1
                if ckdir is not None and (done % every == 0 or done == steps):
                    written.append(str(_save_checkpoint(ckdir, done, model, optimizer, losses, fingerprint,
                                                        device if cuda else None)))
                if progress is not None:
                    progress(QATStep(done, steps, value, step_lr))
        finally:
            model.train(was_training)
    return QATResult(steps=steps, lr=lr, warmup=warmup, schedule=schedule, seed=seed, batches=len(batches),
                     losses=losses, resumed_from=resumed_from, checkpoints=written,
                     seconds=time.perf_counter() - t0)


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with BERT's usual split: no weight decay on biases and LayerNorm/1-d parameters."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def _tensor(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value).to(device)
    return value


def _latest_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return max(found)[1] if found else None


def _save_checkpoint(folder: Path, step: int, model: nn.Module, optimizer, losses: list[float],
                     fingerprint: dict[str, Any], cuda_device: torch.device | None, keep: int = 2) -> Path:
    """Write ``qat-step-<step>.pt`` atomically (temp file + rename); keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"qat-step-{step:07d}.pt"
    state = {
        "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "losses": list(losses), "fingerprint": fingerprint, "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(cuda_device) if cuda_device is not None else None,
    }
    save_atomic(path, lambda fh: torch.save(state, fh))
    old = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name)))
    for _, p in old[:-keep]:
        p.unlink(missing_ok=True)
    return path


__all__ = [
    "QATError", "QATPlan", "QATStep", "QATResult", "finetune", "lr_at", "batch_order",
    "classification_loss", "regression_loss", "qa_loss", "LOSSES", "train_batches", "INPUT_NAMES", "SCHEDULES",
]
