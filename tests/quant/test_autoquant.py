"""Tests for the PTQ-misses-the-bound workflow: parts and their skip patterns, sensitivity ranking
(a deliberately broken layer ranks first), greedy partial quantization (1-minimal on a constructed
case, evaluations counted, budget respected), the calibrator factory, and the auto recipe's
budget, bound and fastest-variant choice."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from qdqbench.quant.auto import (
    DEFAULT_CALIBRATORS,
    MINIMALITY_NOTE,
    Budget,
    Calibrations,
    CalibratorSpec,
    MeetsBound,
    Part,
    auto_recipe,
    enabled_quantizers,
    find_parts,
    greedy_partial,
    logits_sqnr_proxy,
    pattern_matches,
    quantizer_parts,
    sensitivity,
)
from qdqbench.quant.qdqbert import QDQSettings, apply_skip_patterns, quantize_bert, quantizer_group
from qdqbench.quant.quantizer import calibrating, finish_calibration, quantizers


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and on a shared machine far faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(layers: int = 3, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=32)
    return tf.BertForSequenceClassification._from_config(config, attn_implementation="eager").eval()


def feeds(batch: int = 16, seq: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, 100, (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def run_calibration(model) -> None:
    for i in range(3):
        model(**feeds(8, 12, seed=100 + i))


def calibrated(model, settings: QDQSettings | None = None):
    q = quantize_bert(copy.deepcopy(model), settings or QDQSettings())
    with calibrating(q), torch.no_grad():
        run_calibration(q)
    finish_calibration(q)
    return q


def logits(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(**x).logits.numpy()


def part_names(model, part: Part) -> set[str]:
    m = copy.deepcopy(model)
    return set(apply_skip_patterns(m, part.patterns))


# ------------------------------------------------------------------------------ parts


def test_parts_cover_every_quantizer_and_their_patterns_disable_exactly_them():
    model = quantize_bert(tiny(2), QDQSettings(skip=("*.layer.1.attention.self.query",)))
    parts = find_parts(model)
    layer = [p for p in parts if p.kind == "layer"]
    group = [p for p in parts if p.kind == "group"]
    assert [p.name for p in layer] == [f"layer.{i}.{g}" for i in range(2) for g in ("linear", "matmul", "residual")]
    assert [p.name for p in group] == ["all.linear", "all.matmul", "all.residual"]
    enabled = enabled_quantizers(model)
    assert set().union(*(p.quantizers for p in layer)) == enabled  # the skipped query stays out
    assert not any("layer.1.attention.self.query" in n for n in enabled)
    for p in parts:
        disabled_before = {n for n, q in quantizers(model) if q.mode == "disabled"}
        assert part_names(model, p) - disabled_before == set(p.quantizers), p.name
    assert layer[0].patterns == ("bert.encoder.layer.0.*.input_quantizer", "bert.encoder.layer.0.*.weight_quantizer")
    assert pattern_matches("bert.encoder.layer.0.output.dense.input_quantizer", "bert.encoder.layer.0")
    assert not pattern_matches("bert.encoder.layer.10.output.add_local_input_quantizer", "*.layer.1.*.add_*_quantizer")
    json.dumps([p.to_dict() for p in parts])


# ------------------------------------------------------------------------------ sensitivity


def broken(layers: int = 3, bad_layer: int = 1):
    """A tiny BERT whose layer ``bad_layer`` FFN hidden unit 0 is ~1000x larger, compensated after GELU.

    The unit's contribution is unchanged (GELU(1000(z+1))/1000 ~ z+1), but the per-tensor input range
    of that layer's second FFN linear grows ~1000x, so quantizing it zeroes every other unit; the
    FFN's output is scaled up 10x so that what it loses is not drowned by the residual stream.
    """
    model = tiny(layers)
    layer = model.bert.encoder.layer[bad_layer]
    with torch.no_grad():
        layer.intermediate.dense.weight[0] *= 1000.0
        layer.intermediate.dense.bias[0] *= 1000.0
        layer.intermediate.dense.bias[0] += 1000.0  # the unit is on for every token
        layer.output.dense.weight[:, 0] /= 1000.0
        layer.output.dense.weight *= 10.0  # the FFN now dominates the residual stream
    return model


def test_sensitivity_ranks_a_deliberately_broken_layer_first():
    fp32 = broken(3, bad_layer=1)
    model = calibrated(fp32)
    x = feeds(32, 12, seed=7)
    proxy = logits_sqnr_proxy(logits(fp32, x), lambda m: logits(m, x))
    modes = {n: q.mode for n, q in quantizers(model)}
    budget = Budget()
    result = sensitivity(lambda: model, None, proxy, mode="both", budget=budget)
    assert {n: q.mode for n, q in quantizers(model)} == modes  # restored
    assert result.proxy == "logits_sqnr_db" and result.unit == "dB" and result.complete
    assert result.ranking(("layer",))[0].name == "layer.1.linear"
    worst = {s.part.name: s for s in result.parts}["layer.1.linear"]
    others = [s for s in result.parts if s.part.kind == "layer" and s.part.name != "layer.1.linear"]
    assert worst.quantized_only < min(s.quantized_only for s in others) - 5  # dB
    assert worst.float_only > max(s.float_only for s in others) + 5
    assert result.ranking(("group",))[0].name == "all.linear"
    n_parts = 3 * 3 + 3
    assert result.evaluations == budget.proxy_evaluations == 2 + 2 * n_parts and budget.evaluations == 0
    record = result.to_dict()
    json.dumps(record, allow_nan=False)
    assert record["parts"][0]["rank"] == 1 and "ranking_rule" in record
    for mode in ("quantize_one", "float_one"):
        one = sensitivity(model, None, proxy, mode=mode)
        assert one.ranking(("layer",))[0].name == "layer.1.linear"
        assert one.evaluations == 2 + n_parts
    # the same model unbroken: the linear part of layer 1 is not singled out
    plain = tiny(3)
    plain_proxy = logits_sqnr_proxy(logits(plain, x), lambda m: logits(m, x))
    assert sensitivity(calibrated(plain), None, plain_proxy).ranking(("layer",))[0].name != "layer.1.linear"


def test_sensitivity_stops_at_its_budget_and_ranks_unscored_parts_last():
    model = quantize_bert(tiny(2), QDQSettings())
    calls = []

    def score(m):
        calls.append(1)
        return float(len(enabled_quantizers(m)))

    budget = Budget(max_proxy_evaluations=5)
    result = sensitivity(model, None, score, mode="both", budget=budget)
    assert len(calls) == 5 and not result.complete and "budget" in result.note
    assert result.parts[-1].quantized_only is None and result.parts[-1].float_only is None


# ------------------------------------------------------------------------------ greedy partial


def bound_needing(model, needed: list[str]):
    """meets_bound that passes iff every quantizer of the ``needed`` parts is disabled; counts calls."""
    parts = {p.name: p for p in find_parts(model)}
    need = set().union(*(parts[n].quantizers for n in needed))
    calls = []

    def meets_bound(m):
        off = {n for n, q in quantizers(m) if q.mode == "disabled"}
        calls.append(frozenset(off))
        return need <= off, float(len(need & off))

    return meets_bound, calls, parts


def test_greedy_partial_finds_the_minimal_float_set_and_counts_evaluations():
    model = quantize_bert(tiny(3), QDQSettings())
    meets_bound, calls, parts = bound_needing(model, ["layer.0.matmul", "layer.2.linear"])
    order = ["layer.1.residual", "layer.0.matmul", "all.linear", "layer.0.linear", "layer.2.linear",
             "layer.1.linear", "layer.2.matmul"]
    result = greedy_partial(model, [parts[n] for n in order], meets_bound)
    assert result.passed and result.minimal
    assert [p.name for p in result.float_parts] == ["layer.0.matmul", "layer.2.linear"]
    assert result.evaluations == len(calls) == len(set(calls))  # each float set evaluated once
    # forward (all.linear skipped: group kind), galloping over prefix lengths 1, 2, 4 (passes), then
    # bisecting 3 (fails): the shortest passing prefix is 1.residual, 0.matmul, 0.linear, 2.linear (4);
    # prune: -2.linear (the forward's 4th set: cached, fail), -0.linear passes, -2.linear (the forward's
    # 2nd set: cached, fail), -0.matmul fails, -1.residual passes; then 2.linear and 0.matmul are tried
    # against the final set (fail, fail): 5 new evaluations, 2 cached
    assert result.evaluations == 4 + 5
    assert len(result.trace) == 4 + 7 and sum(t["cached"] for t in result.trace) == 2
    forward = [(t["step"], t["float_parts"]) for t in result.trace[:4]]
    assert forward == [("add", ["layer.1.residual"]), ("add", ["layer.1.residual", "layer.0.matmul"]),
                       ("add", ["layer.1.residual", "layer.0.matmul", "layer.0.linear", "layer.2.linear"]),
                       ("bisect", ["layer.1.residual", "layer.0.matmul", "layer.0.linear"])]
    assert all(q.mode != "disabled" for _, q in quantizers(model))  # modes restored
    fresh = quantize_bert(tiny(3), QDQSettings(skip=result.patterns))
    assert meets_bound(fresh)[0]
    record = result.to_dict()
    json.dumps(record, allow_nan=False)
    assert record["minimality"] == MINIMALITY_NOTE and "not guarantee the smallest" in MINIMALITY_NOTE


def test_greedy_partial_gallops_to_a_part_ranked_last():
    """A needed part ranked last of n: log2(n) forward evaluations, not n."""
    model = quantize_bert(tiny(3), QDQSettings())
    parts = {p.name: p for p in find_parts(model) if p.kind == "layer"}
    ranking = [parts[n] for n in sorted(parts) if n != "layer.2.matmul"] + [parts["layer.2.matmul"]]
    assert len(ranking) == 9
    meets_bound, calls, _ = bound_needing(model, ["layer.2.matmul"])
    result = greedy_partial(model, ranking, meets_bound)
    assert result.passed and result.minimal and [p.name for p in result.float_parts] == ["layer.2.matmul"]
    forward = [len(t["float_parts"]) for t in result.trace if t["step"] in ("add", "bisect")]
    assert forward == [1, 2, 4, 8, 9]  # 8 fails, 9 passes: nothing left to bisect
    assert result.evaluations == len(calls) == len(set(calls))  # each float set evaluated once


def test_greedy_partial_respects_its_evaluation_limit_and_returns_the_best_set():
    model = quantize_bert(tiny(3), QDQSettings())
    meets_bound, calls, parts = bound_needing(model, ["layer.2.residual", "layer.2.linear"])
    ranking = [parts[n] for n in ("layer.2.residual", "layer.0.linear", "layer.1.linear", "layer.2.linear")]
    result = greedy_partial(model, ranking, meets_bound, max_evaluations=2)
    assert not result.passed and result.evaluations == len(calls) == 2
    assert "limit" in result.stop_reason and not result.minimal
    assert [p.name for p in result.float_parts] == ["layer.2.residual"]  # the first set reaching value 1
    shared = Budget(max_evaluations=5)
    result = greedy_partial(model, ranking, meets_bound, budget=shared)
    assert result.passed and not result.minimal and shared.evaluations == 5
    assert "evaluation budget" in result.stop_reason


# ------------------------------------------------------------------------------ calibrations


def test_calibrations_run_the_data_twice_and_match_a_direct_calibration():
    fp32 = tiny(2)
    passes = []

    def run(model):
        passes.append(1)
        run_calibration(model)

    calib = Calibrations(fp32, QDQSettings(), run)
    models = {s.name: calib(s) for s in DEFAULT_CALIBRATORS}
    assert len(passes) == 2
    for name, m in models.items():
        assert all(q.is_calibrated for _, q in quantizers(m)), name
    ref = quantize_bert(copy.deepcopy(fp32), QDQSettings(calib_method="percentile"))
    with calibrating(ref), torch.no_grad():
        run_calibration(ref)
    finish_calibration(ref, "percentile", percentile=99.99)
    got = dict(quantizers(models["percentile-99.99"]))
    for n, q in quantizers(ref):
        assert torch.equal(q.amax, got[n].amax), n
    assert "calib=percentile" in repr(got["bert.encoder.layer.0.attention.self.query.input_quantizer"])
    assert CalibratorSpec.parse("percentile:99.999").name == "percentile-99.999"
    with pytest.raises(ValueError, match="unknown calibrator"):
        CalibratorSpec.parse("minmax")


# ------------------------------------------------------------------------------ auto recipe


class Fake:
    """Callbacks over untrained tiny models: each candidate's value is scripted by its tag."""

    def __init__(self, values: dict[str, float], need: tuple[str, ...] = (), threshold: float = 0.9):
        self.values = values  # calibrator name or "qat" -> value of the full-INT8 model
        self.need = need  # parts whose float makes a model pass
        self.threshold = threshold
        self.calls = 0
        self.base = quantize_bert(tiny(2), QDQSettings())
        self.parts = {p.name: p for p in find_parts(self.base)}

    def calibrate(self, spec):
        m = copy.deepcopy(self.base)
        m.tag = spec.name
        return m

    def meets_bound(self, m):
        self.calls += 1
        off = {n for n, q in quantizers(m) if q.mode == "disabled"}
        value = self.values.get(m.tag, 0.5)
        if self.need and set().union(*(self.parts[n].quantizers for n in self.need)) <= off:
            value = max(value, 0.95)
        return value >= self.threshold, value

    def score(self, m):  # sensitivity proxy: the needed parts look most harmful
        off = {n for n, q in quantizers(m) if q.mode == "disabled"}
        return float(sum(len(self.parts[n].quantizers & off) for n in self.need) - 0.001 * len(off))

    def qat(self, m):
        m.tag = "qat"
        return {"steps": 3, "lr": 1e-6}


def test_auto_stops_after_its_evaluation_budget_and_returns_the_best_with_its_gap():
    fake = Fake({"max": 0.7, "percentile-99.99": 0.8, "percentile-99.999": 0.75, "entropy": 0.6, "mse": 0.65})
    budget = Budget(max_evaluations=3)
    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, qat_fn=fake.qat, budget=budget,
                    threshold=0.9)
    assert fake.calls == 3 and budget.evaluations == 3 and r.budget["evaluations"] == 3
    assert len([t for t in r.trace if t["value"] is not None]) == 3
    assert not r.passed and r.name == "ptq:percentile-99.99" and r.gap == pytest.approx(0.1)
    assert "evaluation budget" in r.stop_reason
    json.dumps(r.to_dict(), allow_nan=False)


def test_auto_never_reports_a_failing_candidate_as_passed():
    fake = Fake({"max": 0.7, "mse": 0.85, "qat": 0.89})  # nothing reaches 0.9
    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, qat_fn=fake.qat,
                    budget=Budget(max_evaluations=40), threshold=0.9)
    assert not r.passed and not any(t["passed"] for t in r.trace)
    assert r.name == "qat:mse" and r.gap == pytest.approx(0.01) and r.description["qat"] == {"steps": 3, "lr": 1e-6}
    stages = {t["stage"] for t in r.trace}
    assert stages == {"ptq", "partial", "qat", "qat+partial"}
    assert r.selection.startswith("nothing met the bound")


def test_the_partial_search_leaves_one_evaluation_for_qat():
    fake = Fake({"qat": 0.93})  # no float set passes; QAT does
    budget = Budget(max_evaluations=8)
    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, qat_fn=fake.qat, budget=budget,
                    threshold=0.9)
    stages = [t["stage"] for t in r.trace if t["value"] is not None]
    assert stages == ["ptq"] * 5 + ["partial"] * 2 + ["qat"] and budget.evaluations == 8
    assert r.passed and r.name.startswith("qat:") and r.description["float_parts"] == []


def test_auto_keeps_the_best_calibrator_among_passing_full_int8_and_stops_there():
    fake = Fake({"max": 0.7, "percentile-99.99": 0.92, "entropy": 0.95, "mse": 0.5}, need=("layer.0.linear",))
    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, qat_fn=fake.qat, threshold=0.9)
    assert r.passed and r.name == "ptq:entropy" and r.description["float_parts"] == []
    assert {t["stage"] for t in r.trace} == {"ptq"} and fake.calls == 5  # every calibrator, then stop
    assert "cannot be faster" in r.stop_reason


def test_auto_prefers_full_int8_qat_over_an_earlier_passing_partial_variant():
    fake = Fake({"qat": 0.93}, need=("layer.1.linear",))
    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, qat_fn=fake.qat, threshold=0.9)
    partial = [t for t in r.trace if t["stage"] == "partial" and t["passed"]]
    assert partial and partial[-1]["float_parts"] == ["layer.1.linear"]  # found first
    assert r.passed and r.name == "qat:max" and r.description["float_parts"] == []  # but QAT is faster
    assert "fewer float parts is faster" in r.selection
    assert r.sensitivity["parts"][0]["part"] in ("layer.1.linear", "all.linear")
    assert r.partial["float_parts"] == ["layer.1.linear"] and r.partial["minimal"]


def test_auto_uses_measured_latency_and_skips_qat_when_full_int8_is_not_faster():
    fake = Fake({"qat": 0.93}, need=("layer.1.linear",))
    measured = []

    def latency(m):  # an engine where the partial variant happens to be faster than full INT8
        off = sum(q.mode == "disabled" for _, q in quantizers(m))
        measured.append(off)
        return 10.0 - 0.1 * off

    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, qat_fn=fake.qat, latency_fn=latency,
                    threshold=0.9)
    assert r.passed and r.description["float_parts"] == ["layer.1.linear"] and r.latency is not None
    assert not any(t["stage"] == "qat" for t in r.trace)
    assert any("QAT skipped" in n for n in r.notes)
    assert r.selection.startswith("lowest measured latency")
    assert len(measured) == len(set(measured))  # one measurement per Q/DQ structure
    chosen_off = {n for n, q in quantizers(r.model) if q.mode == "disabled"}
    assert chosen_off == set(fake.parts["layer.1.linear"].quantizers)


def test_auto_prices_each_float_part_of_the_chosen_variant_on_the_engine():
    fake = Fake({}, need=("layer.0.linear", "layer.1.linear"))
    p0, p1 = (fake.parts[n].quantizers for n in ("layer.0.linear", "layer.1.linear"))

    def latency(m):  # every float quantizer of layer 0 costs 0.5 ms, of layer 1 0.2 ms
        off = {n for n, q in quantizers(m) if q.mode == "disabled"}
        return 10.0 + 0.5 * len(off & p0) + 0.2 * len(off & p1)

    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, latency_fn=latency, threshold=0.9)
    assert r.passed and sorted(r.description["float_parts"]) == ["layer.0.linear", "layer.1.linear"]
    costs = r.to_dict()["float_part_costs"]
    assert costs["full_int8"] == pytest.approx(10.0)
    by_part = {c["part"]: c for c in costs["parts"]}
    assert by_part["layer.0.linear"]["delta"] == pytest.approx(0.5 * len(p0))
    assert by_part["layer.1.linear"]["delta"] == pytest.approx(0.2 * len(p1))
    assert by_part["layer.0.linear"]["quantizers"] == len(p0)
    assert costs["chosen"] == pytest.approx(r.latency) and costs["delta"] == pytest.approx(
        0.5 * len(p0) + 0.2 * len(p1))
    # The parts stay float in the returned model after being priced one by one.
    off = {n for n, q in quantizers(r.model) if q.mode == "disabled"}
    assert off == p0 | p1
    json.dumps(r.to_dict(), allow_nan=False)


def test_meets_bound_uses_the_verdict_rule():
    mb = MeetsBound("accuracy", lambda m: 0.891, baseline=0.9, bound=0.01)
    assert mb.threshold == pytest.approx(0.891)
    assert mb(None) == (True, 0.891)
    assert MeetsBound("accuracy", lambda m: 0.88, baseline=0.9)(None) == (False, 0.88)


def _broken_recipe(calibrators):
    """auto_recipe on the broken tiny BERT with real calibrations; the bound is a logits SQNR of 30 dB."""
    fp32 = broken(3, bad_layer=1)
    x = feeds(32, 12, seed=7)
    proxy = logits_sqnr_proxy(logits(fp32, x), lambda m: logits(m, x))

    def meets_bound(m):
        v = proxy(m)
        return v >= 30.0, v

    return auto_recipe(Calibrations(fp32, QDQSettings(), run_calibration), meets_bound, score_fn=proxy,
                       calibrators=calibrators, threshold=30.0, budget=Budget(max_evaluations=30))


def test_auto_recipe_leaves_the_broken_layer_in_float():
    r = _broken_recipe(("max",))
    assert r.passed and r.name == "partial:max:layer.1.linear" and r.value >= 30.0
    assert r.description["skip_patterns"] == ["bert.encoder.layer.1.*.input_quantizer",
                                              "bert.encoder.layer.1.*.weight_quantizer"]
    off = {n for n, q in quantizers(r.model) if q.mode == "disabled"}
    assert off and all(n.startswith("bert.encoder.layer.1.") and n.endswith(("input_quantizer", "weight_quantizer"))
                       and "add_" not in n for n in off)
    assert r.trace[0]["name"] == "ptq:max" and not r.trace[0]["passed"]
    assert r.sensitivity["proxy"] == "logits_sqnr_db" and r.budget["proxy_evaluations"] == 26
    json.dumps(r.to_dict(), allow_nan=False)


@pytest.mark.slow
def test_auto_recipe_tries_every_default_calibrator_before_partial_quantization():
    r = _broken_recipe(DEFAULT_CALIBRATORS)
    ptq = [t for t in r.trace if t["stage"] == "ptq"]
    assert [t["calibrator"] for t in ptq] == [s.name for s in DEFAULT_CALIBRATORS]
    assert not any(t["passed"] for t in ptq)  # an activation outlier defeats every calibrator
    assert r.passed and r.description["float_parts"] == ["layer.1.linear"]
    best = max(ptq, key=lambda t: t["value"])
    assert r.description["calibrator"] == best["calibrator"]  # partial starts from the best calibration


def test_ci_upper_accepts_only_when_the_drop_interval_stays_within_the_bound():
    # baseline 0.9, bound 1% relative: the allowed drop is 0.009.
    inside = MeetsBound("accuracy", lambda m: (0.899, (-0.002, 0.006)), baseline=0.9, accept="ci-upper")
    check = inside(None)
    assert check == (True, 0.899) and check.drop_ci == (-0.002, 0.006)
    assert check.evidence()["allowed_drop"] == pytest.approx(0.009) and check.evidence()["rule"] == "ci-upper"
    # The point estimate is within the bound, but the interval's upper end is not: refused.
    noisy = MeetsBound("accuracy", lambda m: (0.899, (-0.01, 0.02)), baseline=0.9, accept="ci-upper")
    assert noisy(None) == (False, 0.899)
    assert MeetsBound("accuracy", lambda m: (0.899, (-0.01, 0.02)), baseline=0.9, accept="point")(None)[0]
    with pytest.raises(ValueError, match="accept"):
        MeetsBound("accuracy", lambda m: 0.9, baseline=0.9, accept="maybe")


def test_auto_records_each_candidates_drop_interval_in_its_trace():
    fake = Fake({"max": 0.7}, need=("layer.0.linear",))

    def meets(m):  # the fake's value with an interval of ±0.02 around its drop from 0.9
        _, value = fake.meets_bound(m)
        return MeetsBound("accuracy", lambda _: (value, (0.9 - value - 0.02, 0.9 - value + 0.02)),
                          baseline=0.9, bound=0.1, accept="ci-upper")(m)

    r = auto_recipe(fake.calibrate, meets, calibrators=["max"], score_fn=fake.score, threshold=0.81)
    evaluated = [t for t in r.trace if t["value"] is not None]
    assert all(t["rule"] == "ci-upper" and t["drop_ci_high"] == pytest.approx(0.9 - t["value"] + 0.02)
               for t in evaluated)
    assert r.passed and r.description["float_parts"] == ["layer.0.linear"]
    partial_trace = r.partial["trace"]
    assert all("drop_ci_high" in t for t in partial_trace if not t["cached"])


def test_auto_times_passing_structures_round_robin_and_breaks_a_noisy_tie_by_fewer_float_parts():
    fake = Fake({"qat": 0.93}, need=("layer.1.linear",))
    noise = iter([0.0, 3.0, -3.0, 2.0, -2.0, 1.0, 0.5, -0.5] * 4)
    calls = []

    def latency(m):  # the partial variant is 0.5 ms faster on average, inside ±3 ms of noise
        off = sum(q.mode == "disabled" for _, q in quantizers(m))
        calls.append(off)
        return 50.0 - (0.5 if off else 0.0) + next(noise)

    r = auto_recipe(fake.calibrate, fake.meets_bound, score_fn=fake.score, qat_fn=fake.qat, latency_fn=latency,
                    threshold=0.9, timing_rounds=3)
    t = r.timing
    assert t["rounds"] == 3 and all(len(s["rounds"]) == 3 for s in t["structures"])
    assert len(t["tied_with_fastest"]) == 2 and r.selection.startswith("lowest measured latency")
    assert r.passed and r.description["float_parts"] == []  # the tie goes to full INT8 (QAT)
    json.dumps(r.to_dict(), allow_nan=False)


# ------------------------------------------------------------------------------ the finer search space


def test_per_quantizer_sensitivity_covers_every_quantizer_once_and_ranks_by_measured_drop():
    fp32 = broken(3, bad_layer=1)
    model = calibrated(fp32)
    x = feeds(32, 12, seed=7)
    proxy = logits_sqnr_proxy(logits(fp32, x), lambda m: logits(m, x))
    parts = quantizer_parts(model)
    enabled = enabled_quantizers(model)
    assert sorted(n for p in parts for n in p.quantizers) == sorted(enabled)  # each quantizer exactly once
    assert len(parts) == 3 * (6 * 2 + 4 + 4) and all(p.kind == "quantizer" for p in parts)
    for p in parts[:25]:  # each part's pattern disables that quantizer alone
        assert part_names(model, p) == set(p.quantizers), p.name
    assert {p.group for p in parts if "add_" in p.name} == {"residual"}
    result = sensitivity(model, parts, proxy, mode="quantize_one")
    assert result.evaluations == 2 + len(parts) and result.complete
    ranked = result.parts
    assert [s.part.name for s in ranked][0] == "layer.1.output.dense.input"
    scores = [s.quantized_only for s in ranked]
    assert scores == sorted(scores)  # most harmful (lowest SQNR with only it quantized) first
    assert [s.rank for s in ranked] == list(range(1, len(parts) + 1))
    assert find_parts(model, per_layer=False, per_group=False, per_quantizer=True) == parts


def test_auto_partial_at_quantizer_granularity_floats_quantizers_in_sensitivity_order():
    fp32 = broken(3, bad_layer=1)
    x = feeds(32, 12, seed=7)
    proxy = logits_sqnr_proxy(logits(fp32, x), lambda m: logits(m, x))

    def meets_bound(m):
        v = proxy(m)
        return v >= 30.0, v

    r = auto_recipe(Calibrations(fp32, QDQSettings(), run_calibration), meets_bound, score_fn=proxy,
                    calibrators=("max",), threshold=30.0, budget=Budget(max_evaluations=30), granularity="quantizer")
    assert r.passed and r.search_space["granularity"] == "quantizer"
    ranking = [p["part"] for p in r.sensitivity["parts"]]
    assert ranking[0] == "layer.1.output.dense.input" and len(ranking) == 60
    assert r.budget["proxy_evaluations"] == 2 + 2 * 60  # mode both: each quantizer alone quantized and alone float
    added = [t["part"] for t in r.partial["trace"] if t["step"] == "add"]
    assert added == ranking[:len(added)]  # partial quantization disables quantizers in the ranking's order
    off = {n for n, q in quantizers(r.model) if q.mode == "disabled"}
    assert off == {f"bert.encoder.layer.1.{p.split('.', 2)[2]}_quantizer" for p in r.description["float_parts"]}
    assert "bert.encoder.layer.1.output.dense.input_quantizer" in off
    layer_part = {p.name: p for p in find_parts(calibrated(fp32))}["layer.1.linear"]
    assert off < layer_part.quantizers  # finer than layer × group: part of layer 1's linears stays INT8
    with pytest.raises(ValueError, match="granularity"):
        auto_recipe(Calibrations(fp32, QDQSettings(), run_calibration), meets_bound, granularity="op")


def _weights_and_activations(model):
    w = {q.num_bits for _, q in quantizers(model) if q.is_weight and q.mode != "disabled"}
    a = {q.num_bits for _, q in quantizers(model) if not q.is_weight and q.mode != "disabled"}
    return w, a


def test_auto_tries_7_bit_weights_and_builds_them_with_8_bit_activations():
    fp32 = tiny(2)
    x = feeds(16, 12, seed=7)
    proxy = logits_sqnr_proxy(logits(fp32, x), lambda m: logits(m, x))
    seen = []

    def meets_bound(m):  # an engine that only accepts 7-bit weights (its int16 accumulation saturates)
        w, a = _weights_and_activations(m)
        seen.append((w, a))
        return w == {7}, proxy(m)

    r = auto_recipe(Calibrations(fp32, QDQSettings(), run_calibration), meets_bound, score_fn=proxy,
                    calibrators=("max", "mse"), weight_bits=(7,), partial=False)
    best = max((t for t in r.trace if t["stage"] == "ptq"), key=lambda t: t["value"])
    assert [t["name"] for t in r.trace] == ["ptq:max", "ptq:mse", f"{best['name']}:w7"]
    assert seen == [({8}, {8}), ({8}, {8}), ({7}, {8})]
    w7 = r.trace[-1]
    assert w7["stage"] == "weight-bits" and w7["passed"] and w7["structure"]["weight_bits"] == 7
    assert w7["structure"]["activation_bits"] == 8 and r.trace[0]["structure"]["weight_bits"] == 8
    assert r.passed and r.name == w7["name"] and r.description["weight_bits"] == 7
    assert _weights_and_activations(r.model) == ({7}, {8})
    # Activations keep the ranges of the calibration it came from; weights keep max |w| per channel.
    ref = Calibrations(fp32, QDQSettings(), run_calibration)(best["calibrator"])
    got = dict(quantizers(r.model))
    for n, q in quantizers(ref):
        assert torch.equal(q.amax, got[n].amax), n
    assert max(q.qmax for _, q in quantizers(r.model) if q.is_weight) == 63
    json.dumps(r.to_dict(), allow_nan=False)


def test_auto_picks_each_groups_calibrator_by_the_selection_score_and_builds_it_as_stated():
    fp32 = broken(2, bad_layer=1)
    x = feeds(16, 12, seed=7)
    proxy = logits_sqnr_proxy(logits(fp32, x), lambda m: logits(m, x))
    cals = ("max", "percentile-99", "mse")
    snapshots = []

    def meets_bound(m):  # nothing passes: every stage runs; what each candidate was built with is kept
        snapshots.append({n: (float(q.amax), q.calib_method) for n, q in quantizers(m)
                          if not q.is_weight and q.mode != "disabled"})
        return False, proxy(m)

    r = auto_recipe(Calibrations(fp32, QDQSettings(), run_calibration), meets_bound, calibrators=cals,
                    group_calibrators=True, partial=False, threshold=1e9)
    refs = {c: dict(quantizers(Calibrations(fp32, QDQSettings(), run_calibration)(c))) for c in cals}
    evaluated = [t for t in r.trace if t["value"] is not None]
    assert len(evaluated) == len(snapshots)
    base = max(evaluated[:3], key=lambda t: t["value"])
    mixes = [t for t in evaluated if t["stage"] == "group-calibrators"]
    singles = [t for t in mixes if len(t["group_calibrators"]) == 1]
    assert sorted((g, c) for t in singles for g, c in t["group_calibrators"].items()) == sorted(
        (g, c) for g in ("linear", "matmul", "residual") for c in cals if c != base["calibrator"])
    for t in evaluated:  # every candidate's activation ranges are its stated calibrator's, group by group
        snap = snapshots[evaluated.index(t)]
        for n, (amax, method) in snap.items():
            cal = t["structure"]["calibrators"][quantizer_group(n)]
            assert amax == float(refs[cal][n].amax), (t["name"], n)
            assert method == CalibratorSpec.parse(cal).method
    choice = r.search_space["group_calibrators"]["by_group"]
    for g in ("linear", "matmul", "residual"):
        trials = [(base["value"], base["calibrator"])] + [
            (t["value"], t["group_calibrators"][g]) for t in singles if g in t["group_calibrators"]]
        best = max(trials, key=lambda vc: vc[0])  # ties keep the earlier (the base)
        assert choice[g]["calibrator"] == best[1]
    changed = {g: c["calibrator"] for g, c in choice.items() if c["calibrator"] != base["calibrator"]}
    combined = [t for t in mixes if len(t["group_calibrators"]) > 1]
    assert (len(combined) == 1 and combined[0]["group_calibrators"] == changed) if len(changed) > 1 else not combined
    assert r.budget["evaluations"] == 3 + 6 + len(combined)
    json.dumps(r.to_dict(), allow_nan=False)


def _residual_run(residual_ms: float, noise=None):
    """auto on a passing full-INT8 variant whose residual Q/DQ costs ``residual_ms`` on a fake engine."""
    fake = Fake({"max": 0.95})
    residual = fake.parts["all.residual"].quantizers
    noise = noise or iter(lambda: 0.0, None)

    def latency(m):
        on = {n for n, q in quantizers(m) if q.mode != "disabled"}
        return 50.0 + (residual_ms if on & residual else 0.0) + next(noise)

    def meets(m):  # the fake's verdict with a drop interval, as the runner's ci-upper rule gives
        _, value = fake.meets_bound(m)
        return MeetsBound("accuracy", lambda _: (value, (0.0, 0.005)), baseline=0.95, bound=0.01,
                          accept="ci-upper")(m)

    r = auto_recipe(fake.calibrate, meets, calibrators=["max"], score_fn=fake.score, latency_fn=latency,
                    residual_by_speed=True, timing_rounds=3)
    return r, residual


def test_residual_qdq_is_kept_or_dropped_by_the_engines_measured_speed():
    # An engine where residual Q/DQ makes INT8 faster (ONNX Runtime on a VNNI CPU): kept.
    kept, residual = _residual_run(-5.0)
    assert kept.passed and kept.name == "ptq:max" and kept.description["float_parts"] == []
    twin = next(t for t in kept.trace if t["stage"] == "no-residual")
    assert twin["name"] == "ptq:max:no-residual" and twin["passed"] and twin["float_parts"] == ["all.residual"]
    assert twin["structure"]["int8_by_group"].get("residual", 0) == 0
    assert all(q.mode != "disabled" for _, q in quantizers(kept.model))
    # An engine where it makes INT8 slower (AVX2): dropped.
    dropped, _ = _residual_run(+5.0)
    assert dropped.passed and dropped.name == "ptq:max:no-residual"
    assert {n for n, q in quantizers(dropped.model) if q.mode == "disabled"} == residual
    assert dropped.timing["chosen"] == "ptq:max:no-residual" and len(dropped.timing["structures"]) == 2
    # A difference inside the noise is a tie: the residual Q/DQ stays (fewer float parts).
    tie, _ = _residual_run(+0.5, iter([0.0, 2.0, -2.0, 1.0, 1.5, -1.0] * 4))
    assert tie.name == "ptq:max" and len(tie.timing["tied_with_fastest"]) == 2
    # The trace: each candidate's structure, drop interval, verdict and timing evidence.
    for t in dropped.trace:
        assert t["structure"]["int8_quantizers"] > 0 and t["rule"] == "ci-upper"
        assert t["drop_ci_low"] == 0.0 and t["drop_ci_high"] == 0.005 and t["passed"]
        assert len(t["timing"]["rounds"]) == 3 and t["timing"]["median"] is not None
    json.dumps(dropped.to_dict(), allow_nan=False)


def test_residual_qdq_stays_without_a_latency_measurement():
    fake = Fake({"max": 0.95})
    r = auto_recipe(fake.calibrate, fake.meets_bound, calibrators=["max"], residual_by_speed=True)
    assert r.name == "ptq:max" and not any(t["stage"] == "no-residual" for t in r.trace)
    assert any("residual-add Q/DQ kept without a measurement" in n for n in r.notes)


def test_a_selection_part_too_small_for_ci_upper_is_named_in_a_note():
    """MRPC's 213 selection examples: every interval's upper half (≈ 2.3 pts) is wider than the
    0.85-pt allowed drop, so ci-upper can accept nothing; the record says so and what to change."""
    from types import SimpleNamespace

    from qdqbench.quant.auto import BoundCheck, _too_wide_note

    def cand(drop, high, allowed=0.0085):
        return SimpleNamespace(evidence=BoundCheck(False, 0.85, rule="ci-upper", drop=drop,
                                                   drop_ci=(drop - 0.02, high), allowed=allowed).evidence())

    (note,) = _too_wide_note([cand(-0.0075, 0.0155), cand(0.01, 0.04)])
    assert "narrowest upper half of a drop interval is 2.30 pts" in note and "allowed drop (0.85 pts)" in note
    assert "1.45 pts above fp32" in note and "auto.selection.fraction" in note
    assert _too_wide_note([cand(0.0, 0.005)]) == []  # an interval narrow enough: the rule could accept
    assert _too_wide_note([SimpleNamespace(evidence=BoundCheck(False, 0.8).evidence())]) == []  # point rule
