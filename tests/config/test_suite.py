"""Suite schema, validation messages, overrides and matrix expansion."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from qdqbench.config.suite import Suite, SuiteValidationError, apply_overrides, expand, load_suite, parse_suite
from qdqbench.core.errors import SuiteError

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "name": "t",
    "models": {"m": {"hub": "org/bert", "tasks": ["sst2"]}},
    "tasks": {"sst2": {}},
    "schemes": {"fp32": {"kind": "fp32"}, "int8": {}},
}


def _errors(data) -> list[str]:
    with pytest.raises(SuiteValidationError) as info:
        parse_suite(data, "s.yaml")
    return info.value.problems


def test_defaults_and_round_trip():
    suite = parse_suite(BASE)
    assert suite.accuracy.bound == 0.01 and suite.accuracy.mode == "relative"
    assert suite.schemes["int8"].groups == ["linear", "matmul", "residual"]
    assert suite.schemes["int8"].weights == "per-channel"
    assert suite.baseline_scheme == "fp32"
    again = Suite.model_validate_json(suite.model_dump_json())
    assert again == suite


def test_unknown_key_says_did_you_mean():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schemes"]["int8"]["calibraton"] = {"method": "max"}
    (msg,) = _errors(data)
    assert msg.startswith("s.yaml: schemes.int8.calibraton: unknown key")
    assert "did you mean 'calibration'" in msg


def test_unknown_nested_key_and_bad_literal():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schemes"]["int8"]["calibration"] = {"methd": "max"}
    data["backends"] = ["torch", "onnxruntim"]
    msgs = _errors(data)
    assert any("schemes.int8.calibration.methd: unknown key" in m and "'method'" in m for m in msgs)
    assert any("backends[1]" in m and "did you mean 'onnxruntime'" in m for m in msgs)


def test_references_between_sections():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["models"]["m"]["tasks"] = ["sst"]
    msgs = _errors(data)
    assert any("models.m.tasks: task 'sst' is not defined" in m and "did you mean 'sst2'" in m for m in msgs)


def test_exactly_one_source_and_one_baseline():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["models"]["m"]["path"] = "/x"
    data["schemes"]["fp32"]["kind"] = "qdq"
    msgs = _errors(data)
    assert any("exactly one of hub, path, package" in m for m in msgs)
    data["models"]["m"].pop("path")
    msgs = _errors(data)
    assert any("exactly one scheme of kind fp32" in m for m in msgs)


def test_expand_ids_are_stable_and_ordered():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["backends"] = ["torch", "onnxruntime"]
    data["shapes"] = {"batch": [1, 8], "seq": [128]}
    cells = expand(parse_suite(data))
    ids = [c.id for c in cells]
    assert ids == [
        "m/sst2/fp32/torch/accuracy",
        "m/sst2/fp32/onnx/export",
        "m/sst2/fp32/onnxruntime/accuracy",
        "m/sst2/fp32/onnxruntime/latency/b1s128",
        "m/sst2/fp32/onnxruntime/latency/b8s128",
        "m/sst2/int8/torch/accuracy",
        "m/sst2/int8/onnx/export",
        "m/sst2/int8/onnxruntime/accuracy",
        "m/sst2/int8/onnxruntime/latency/b1s128",
        "m/sst2/int8/onnxruntime/latency/b8s128",
    ]
    assert len(set(ids)) == len(ids)
    assert [c.id for c in expand(parse_suite(data))] == ids


def test_torch_timing_adds_torch_latency_cells_except_for_peers():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["backends"] = ["torch", "onnxruntime"]
    data["shapes"] = {"batch": [8], "seq": [128]}
    data["schemes"]["dyn"] = {"kind": "ort-dynamic"}
    assert not [c for c in expand(parse_suite(data)) if c.backend == "torch" and c.kind == "latency"]
    data["timing"] = {"torch": {"device": "cuda", "float_precision": "fp16"}}
    suite = parse_suite(data)
    assert suite.timing.torch.float_precision == "fp16" and suite.timing.best_fp32
    torch_lat = [c.id for c in expand(suite) if c.backend == "torch" and c.kind == "latency"]
    assert torch_lat == ["m/sst2/fp32/torch/latency/b8s128", "m/sst2/int8/torch/latency/b8s128"]
    data["timing"] = {"torch": {"device": "gpu"}}
    assert any("timing.torch.device" in p and "'cuda'" in p for p in _errors(data))


def test_backend_variants_and_the_auto_target_are_checked():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["backends"] = ["torch", "openvino", "openvino@bf16", "tensorrt@fp16"]
    data["shapes"] = {"batch": [8], "seq": [128]}
    ids = [c.id for c in expand(parse_suite(data))]
    assert "m/sst2/fp32/openvino@bf16/latency/b8s128" in ids and "m/sst2/int8/tensorrt@fp16/accuracy" in ids
    data["backends"] = ["torch", "openvino@bf61"]
    assert any("no @bf61 variant" in p and "did you mean 'bf16'" in p for p in _errors(data))
    data["backends"] = ["torch", "onnxruntime@fp16"]
    assert any("onnxruntime has no @fp16 variant" in p and "tensorrt@fp16" in p for p in _errors(data))
    data["backends"] = ["torch", "opnvino"]
    assert any("did you mean 'openvino'" in p for p in _errors(data))
    data["backends"] = ["torch", "openvino", "openvino"]
    assert any("listed twice" in p for p in _errors(data))
    data["backends"] = ["torch", "openvino"]
    data["schemes"]["auto"] = {"recipe": "auto", "auto": {"target_backend": "openvino@bf16"}}
    assert any("schemes.auto.auto.target_backend: 'openvino@bf16' is not one of" in p for p in _errors(data))


def test_baseline_runs_first_even_when_listed_last():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schemes"] = {"int8": {}, "fp32": {"kind": "fp32"}}
    data["backends"] = ["torch"]
    assert [c.scheme for c in expand(parse_suite(data))] == ["fp32", "int8"]


def test_overrides_set_nested_values_and_reject_unknown_scheme():
    data = apply_overrides(BASE, ["schemes.int8.calibration.samples=256", "shapes.batch=[1, 4]"])
    suite = parse_suite(data)
    assert suite.schemes["int8"].calibration.samples == 256
    assert suite.shapes.batch == [1, 4]
    assert "calibration" not in BASE["schemes"]["int8"]  # the input is not mutated
    with pytest.raises(SuiteError, match="no scheme 'int9'.*did you mean 'int8'"):
        apply_overrides(BASE, ["schemes.int9.bits=8"])
    with pytest.raises(SuiteError, match="expected KEY.PATH=VALUE"):
        apply_overrides(BASE, ["schemes.int8.bits"])
    with pytest.raises(SuiteError, match="not valid YAML"):
        apply_overrides(BASE, ["schemes.int8.bits=[1,"])


def test_bad_override_value_fails_validation_naming_the_key():
    data = apply_overrides(BASE, ["schemes.int8.calibration.method=entropyy"])
    (msg,) = _errors(data)
    assert "schemes.int8.calibration.method" in msg and "did you mean 'entropy'" in msg


def test_load_suite_errors_are_one_line(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SuiteError, match="nope.yaml: suite file not found"):
        load_suite(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [\n", encoding="utf-8")
    with pytest.raises(SuiteError) as info:
        load_suite(bad)
    assert "bad.yaml: malformed YAML (line" in str(info.value) and "\n" not in str(info.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SuiteError, match="empty"):
        load_suite(empty)


def test_yaml_tags_that_execute_code_are_refused(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo hi']\n", encoding="utf-8")
    with pytest.raises(SuiteError, match="malformed YAML"):
        load_suite(p)


def test_model_path_and_data_dir_overrides(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    suite = load_suite(p, model_paths={"org/bert": str(tmp_path / "ckpt")}, data_dir=str(tmp_path / "glue"))
    m = suite.models["m"]
    assert m.hub is None and m.path == str((tmp_path / "ckpt").resolve())
    assert suite.tasks["sst2"].data_dir == str((tmp_path / "glue").resolve())
    with pytest.raises(SuiteError, match="no model 'org/bertt'.*did you mean"):
        load_suite(p, model_paths={"org/bertt": "/x"})


def test_relative_paths_resolve_against_the_suite_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "s.yaml"
    p.write_text(textwrap.dedent("""
        name: rel
        models: {m: {path: ../ckpt, tasks: [sst2]}}
        tasks: {sst2: {data_dir: ../glue}}
        schemes: {fp32: {kind: fp32}}
    """), encoding="utf-8")
    suite = load_suite(p)
    assert suite.models["m"].path == str((tmp_path / "ckpt").resolve())
    assert suite.tasks["sst2"].data_dir == str((tmp_path / "glue").resolve())


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "suites").glob("*.yaml")))
def test_shipped_suites_validate(name):
    suite = load_suite(REPO / "suites" / name)
    assert expand(suite)


# -- names that become paths and cell ids ------------------------------------------------------

BAD_NAMES = ["../../escaped", "a/b", "a\\b", ".hidden", "x y", "-rf", "c:d", "", "x\n", "nul\0", "a" * 101]


def _renamed(section: str, new: str) -> dict:
    """BASE with one key of ``section`` renamed (references to it follow)."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    if section == "name":
        data["name"] = new
    elif section == "models":
        data["models"] = {new: data["models"]["m"]}
    elif section == "tasks":
        data["tasks"] = {new: {"name": "sst2"}}
        data["models"]["m"]["tasks"] = [new]
    else:
        data["schemes"] = {"fp32": {"kind": "fp32"}, new: {}}
    return data


@pytest.mark.parametrize("section", ["name", "models", "tasks", "schemes"])
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_must_be_one_safe_path_component(section, bad):
    msgs = _errors(_renamed(section, bad))
    where = "name:" if section == "name" else f"{section}: key"
    expected = f"s.yaml: {where} {bad!r} is not a safe name (letters, digits, '.', '_', '-', '+';"
    assert any(m.startswith(expected) for m in msgs), msgs


def test_escaping_suite_name_names_the_file_and_key(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(_renamed("name", "../../escaped")), encoding="utf-8")
    with pytest.raises(SuiteValidationError) as info:
        load_suite(p)
    (msg,) = info.value.problems
    assert msg.startswith(f"{p}: name: '../../escaped' is not a safe name (letters, digits, '.', '_', '-', '+'")


@pytest.mark.parametrize("section", ["name", "models", "tasks", "schemes"])
def test_names_with_dots_dashes_underscores_and_plus_are_fine(section):
    good = "Bert-base_v1.2+int8"
    suite = parse_suite(_renamed(section, good))
    assert good in ({suite.name} | set(suite.models) | set(suite.tasks) | set(suite.schemes))


def test_keys_differing_only_in_case_are_refused():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schemes"]["INT8"] = {}
    (msg,) = _errors(data)
    assert msg == ("s.yaml: schemes: keys 'int8' and 'INT8' differ only in case "
                   "(they would share a folder on case-insensitive file systems)")


# -- timing and bounds must be finite ----------------------------------------------------------


@pytest.mark.parametrize("section, key, text", [
    ("timing", "min_duration_s", ".inf"),
    ("timing", "max_duration_s", ".nan"),
    ("timing", "max_duration_s", ".inf"),
    ("timing", "warmup_s", ".inf"),
    ("timing", "warmup_s", "-.inf"),
    ("accuracy", "bound", ".inf"),
    ("accuracy", "bound", ".nan"),
])
def test_non_finite_values_are_refused(tmp_path, section, key, text):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(BASE) + f"{section}: {{{key}: {text}}}\n", encoding="utf-8")
    with pytest.raises(SuiteValidationError) as info:
        load_suite(p)
    (msg,) = info.value.problems
    assert msg == f"{p}: {section}.{key}: Input should be a finite number"


def test_durations_must_be_positive_and_ordered():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["timing"] = {"max_duration_s": 0}
    (msg,) = _errors(data)
    assert msg == "s.yaml: timing.max_duration_s: Input should be greater than 0"
    data["timing"] = {"min_duration_s": 90, "max_duration_s": 60}
    (msg,) = _errors(data)
    assert msg == "s.yaml: timing: min_duration_s (90) is longer than max_duration_s (60)"
    data["timing"] = {"warmup_s": 0, "min_duration_s": 0, "max_duration_s": 0.5}
    assert parse_suite(data).timing.min_duration_s == 0


def test_shapes_must_be_finite_positive_integers():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["shapes"] = {"seq": [128, float("inf")]}
    (msg,) = _errors(data)
    assert msg == "s.yaml: shapes.seq[1]: Input should be a finite number"


# -- schemes: a union on kind -------------------------------------------------------------------


def test_scheme_kinds_are_separate_classes_that_round_trip():
    from qdqbench.config.suite import Fp32Scheme, PeerScheme, QDQScheme

    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["backends"] = ["torch", "onnxruntime"]
    data["schemes"]["dyn"] = {"kind": "ort-dynamic", "peer": {"per_channel": True}}
    suite = parse_suite(data)
    fp32, int8, dyn = (suite.schemes[k] for k in ("fp32", "int8", "dyn"))
    assert (type(fp32), type(int8), type(dyn)) == (Fp32Scheme, QDQScheme, PeerScheme)
    assert (fp32.is_peer, int8.is_peer, dyn.is_peer) == (False, False, True)
    # What other layers read on every scheme: the QDQ defaults on fp32 and peer schemes.
    for s in (fp32, dyn):
        assert (s.bits, s.weight_bits, s.groups, s.recipe, s.qat) == (8, None, ["linear", "matmul", "residual"],
                                                                     "fixed", None)
        assert s.calibration == int8.calibration and s.auto == int8.auto
    assert fp32.peer == {} and int8.peer == {} and dyn.peer == {"per_channel": True}
    assert Suite.model_validate_json(suite.model_dump_json()) == suite
    assert suite.model_dump()["schemes"]["fp32"] == {"kind": "fp32"}


def test_qdq_settings_are_unknown_keys_on_fp32_and_peer_schemes():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schemes"]["fp32"]["bits"] = 8
    (msg,) = _errors(data)
    assert msg == "s.yaml: schemes.fp32.bits: unknown key ('bits' is a setting of qdq schemes)"
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["backends"] = ["torch", "onnxruntime"]
    data["schemes"]["dyn"] = {"kind": "ort-dynamic", "calibration": {"method": "max"}}
    (msg,) = _errors(data)
    assert msg == "s.yaml: schemes.dyn.calibration: unknown key ('calibration' is a setting of qdq schemes)"
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schemes"]["int8"]["peer"] = {"per_channel": True}
    (msg,) = _errors(data)
    assert msg.startswith("s.yaml: schemes.int8.peer: unknown key ('peer' settings belong to a peer scheme kind")


def test_unknown_scheme_kind_lists_the_kinds_with_did_you_mean():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schemes"]["int8"] = {"kind": "ort-dynamc", "bits": 8}
    (msg,) = _errors(data)
    assert msg.startswith("s.yaml: schemes.int8.kind: Input should be 'fp32', 'qdq', 'ort-dynamic'")
    assert "did you mean 'ort-dynamic'" in msg and "\n" not in msg


def test_bad_peer_settings_name_the_scheme_and_key():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["backends"] = ["torch", "onnxruntime"]
    data["schemes"]["dyn"] = {"kind": "ort-dynamic", "peer": {"per_chanel": True}}
    (msg,) = _errors(data)
    assert msg == "s.yaml: schemes.dyn: per_chanel: unknown key (did you mean 'per_channel'?)"


def test_a_suite_json_of_the_flat_scheme_class_still_loads():
    # suite.json of a run started before schemes were split: fp32 and peer schemes carry every
    # QDQ setting at its default. Resuming such a run must still work.
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["backends"] = ["torch", "onnxruntime"]
    data["schemes"]["dyn"] = {"kind": "ort-dynamic"}
    dumped = parse_suite(data).model_dump(mode="json")
    flat = dumped["schemes"]["int8"] | {"peer": {}}
    dumped["schemes"]["fp32"] = flat | {"kind": "fp32"}
    dumped["schemes"]["dyn"] = flat | {"kind": "ort-dynamic", "peer": {"per_channel": True}}
    suite = Suite.model_validate(dumped)
    assert suite.schemes["fp32"].model_dump() == {"kind": "fp32"}
    assert suite.schemes["dyn"].model_dump() == {"kind": "ort-dynamic", "peer": {"per_channel": True}}


def test_bits_and_calibrators_come_from_the_quant_registry():
    from qdqbench.quant import registry

    for bits in (registry.MIN_BITS - 1, registry.MAX_BITS + 1):
        data = apply_overrides(BASE, [f"schemes.int8.bits={bits}"])
        assert any("schemes.int8.bits" in m for m in _errors(data))
    for bits in (registry.MIN_BITS, registry.MAX_BITS):
        assert parse_suite(apply_overrides(BASE, [f"schemes.int8.bits={bits}"])).schemes["int8"].bits == bits
    suite = parse_suite(BASE)
    assert suite.schemes["int8"].calibration.percentile == registry.CALIBRATORS["percentile"].params["percentile"]
    assert tuple(suite.schemes["int8"].auto.calibrators) == registry.DEFAULT_AUTO_CALIBRATORS
    data = apply_overrides(BASE, ["schemes.int8.auto.calibrators=[percentile-high]"])
    (msg,) = _errors(data)
    assert msg == "s.yaml: schemes.int8.auto.calibrators: calibrator 'percentile-high': 'high' is not a number"
    data = apply_overrides(BASE, ["schemes.int8.auto.calibrators=[entrpy]"])
    (msg,) = _errors(data)
    assert "unknown calibrator 'entrpy'" in msg and "did you mean 'entropy'" in msg
