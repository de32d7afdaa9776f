"""Shards: every cell exactly once, groups kept whole, deterministic, balanced; K/N parsing."""

from __future__ import annotations

import random

import pytest

from qdqbench.config.suite import Cell, expand, parse_suite
from qdqbench.core.errors import QdqbenchError
from qdqbench.run.shard import (
    GROUP_SECONDS,
    estimate_cost,
    group_key,
    parse_shard,
    resolve_shard,
    shard_cells,
    shard_from_environment,
    shard_loads,
)


def suite_data(n_models: int, n_schemes: int, backends=("torch", "onnxruntime"), tasks=("sst2",)) -> dict:
    return {
        "name": "s",
        "models": {f"m{i}": {"path": f"/models/m{i}", "tasks": list(tasks)} for i in range(n_models)},
        "tasks": {t: {} for t in tasks},
        "schemes": {"fp32": {"kind": "fp32"}, **{f"int8-{j}": {} for j in range(n_schemes)}},
        "backends": list(backends),
        "shapes": {"batch": [1, 8], "seq": [128]},
    }


def synthetic_cells(rng: random.Random, n_groups: int) -> list[Cell]:
    cells = []
    for g in range(n_groups):
        model, task = f"model{g % 7}", f"task{g}"
        for s in range(rng.randint(1, 4)):
            cells.append(Cell(model, task, f"s{s}", "torch", "accuracy"))
            for b in rng.sample([1, 2, 4, 8, 16], rng.randint(0, 3)):
                cells.append(Cell(model, task, f"s{s}", "onnxruntime", "latency", b, 128))
    return cells


@pytest.mark.parametrize("seed", range(6))
def test_partition_covers_every_cell_once_and_keeps_groups(seed):
    rng = random.Random(seed)
    cells = synthetic_cells(rng, rng.randint(1, 30))
    for n in range(1, 10):
        shards = [shard_cells(cells, k, n) for k in range(1, n + 1)]
        ids = [c.id for part in shards for c in part]
        assert sorted(ids) == sorted(c.id for c in cells) and len(set(ids)) == len(ids)
        home = {}
        for k, part in enumerate(shards):
            # Original (run) order within a shard: the fp32 baseline still comes first.
            assert part == [c for c in cells if c in set(part)]
            for c in part:
                assert home.setdefault(group_key(c), k) == k


def test_deterministic_and_independent_of_input_order():
    cells = expand(parse_suite(suite_data(9, 3, tasks=("sst2", "rte", "mnli"))))
    shuffled = cells[:]
    random.Random(1).shuffle(shuffled)
    for n in (2, 3, 4, 7):
        for k in range(1, n + 1):
            a = shard_cells(cells, k, n)
            assert a == shard_cells(cells, k, n)
            assert {c.id for c in a} == {c.id for c in shard_cells(shuffled, k, n)}


@pytest.mark.parametrize("seed", range(4))
def test_balanced_within_the_lpt_bound(seed):
    rng = random.Random(seed)
    cells = synthetic_cells(rng, 24)
    groups: dict = {}
    for c in cells:
        groups[group_key(c)] = groups.get(group_key(c), GROUP_SECONDS) + estimate_cost(c)
    for n in (2, 3, 4, 6):
        loads = shard_loads(cells, n)
        assert sum(loads) == pytest.approx(sum(groups.values()))
        lower_bound = max(sum(groups.values()) / n, max(groups.values()))
        assert max(loads) <= (4 / 3) * lower_bound + 1e-9  # Graham's bound for LPT


def test_cost_model_follows_the_suite():
    data = suite_data(2, 1, tasks=("rte", "mnli"))
    data["models"] = {"a": {"path": "/a", "tasks": ["rte"]}, "b": {"path": "/b", "tasks": ["mnli"]}}
    data["timing"] = {"warmup_s": 2.0, "min_duration_s": 10.0}
    suite = parse_suite(data)
    cells = expand(suite)
    rte = next(c for c in cells if c.task == "rte" and c.kind == "accuracy" and c.scheme == "fp32")
    mnli = next(c for c in cells if c.task == "mnli" and c.kind == "accuracy" and c.scheme == "fp32")
    assert estimate_cost(mnli, suite) > 30 * estimate_cost(rte, suite)
    latency = next(c for c in cells if c.kind == "latency" and c.scheme != "fp32")
    assert estimate_cost(latency, suite) == pytest.approx(14.0)
    fp32_ort = next(c for c in cells if c.kind == "latency" and c.scheme == "fp32" and c.backend == "onnxruntime")
    assert estimate_cost(fp32_ort, suite) == pytest.approx(28.0)  # plain and fused graph
    int8 = next(c for c in cells if c.task == "rte" and c.kind == "accuracy" and c.scheme == "int8-0"
                and c.backend == "torch")
    assert estimate_cost(int8, suite) > estimate_cost(rte, suite)  # calibration is charged to it
    data["tasks"]["mnli"] = {"eval_limit": 100}
    limited = parse_suite(data)
    assert estimate_cost(mnli, limited) < estimate_cost(mnli, suite)
    # Two shards: the heavy MNLI group alone, everything else on the other.
    assert {c.task for c in shard_cells(cells, 1, 2, suite)} == {"mnli"}


def test_fewer_groups_than_shards_leaves_shards_empty():
    cells = expand(parse_suite(suite_data(1, 2)))
    parts = [shard_cells(cells, k, 4) for k in range(1, 5)]
    assert parts[0] == cells and parts[1:] == [[], [], []]


@pytest.mark.parametrize("text, expected", [("1/1", (1, 1)), ("2/4", (2, 4)), (" 4 / 4 ", (4, 4))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0/4", "K must be between 1 and N=4"),
    ("5/4", "K must be between 1 and N=4"),
    ("1/0", "N must be at least 1"),
    ("2", "expected K/N with whole numbers, e.g. 2/4"),
    ("a/b", "expected K/N"),
    ("-1/4", "expected K/N"),
    ("1.5/4", "expected K/N"),
])
def test_parse_shard_errors(text, message):
    with pytest.raises(QdqbenchError) as info:
        parse_shard(text)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(f"--shard '{text}'")


def test_shard_cells_checks_k_and_n():
    with pytest.raises(QdqbenchError):
        shard_cells([], 3, 2)


# --------------------------------------------------------------------------- --shard auto

@pytest.mark.parametrize("env, expected", [
    ({"QDQBENCH_SHARD": "2/4"}, (2, 4, "QDQBENCH_SHARD")),  # a GitHub Actions matrix
    ({"QDQBENCH_SHARD": " 1 / 1 "}, (1, 1, "QDQBENCH_SHARD")),
    ({"JOB_COMPLETION_INDEX": "0", "QDQBENCH_SHARD_COUNT": "4"}, (1, 4, "kubernetes")),
    ({"JOB_COMPLETION_INDEX": "3", "JOB_COMPLETIONS": "4"}, (4, 4, "kubernetes")),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, (1, 4, "slurm")),
    # --array=1-4: ids 1..4 are shards 1..4
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "4"}, (4, 4, "slurm")),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "10"}, (3, 3, "slurm")),
    # the explicit variable wins over a scheduler's
    ({"QDQBENCH_SHARD": "1/2", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}, (1, 2, "QDQBENCH_SHARD")),
])
def test_shard_from_environment(env, expected):
    assert shard_from_environment(env) == expected


@pytest.mark.parametrize("env, message", [
    ({}, "no scheduler variable is set"),
    ({"QDQBENCH_SHARD": "3/2"}, "K must be between 1 and N"),
    ({"QDQBENCH_SHARD": "two"}, "expected K/N"),
    ({"JOB_COMPLETION_INDEX": "0"}, "neither QDQBENCH_SHARD_COUNT nor JOB_COMPLETIONS"),
    ({"JOB_COMPLETION_INDEX": "4", "QDQBENCH_SHARD_COUNT": "4"}, "is not below QDQBENCH_SHARD_COUNT=4"),
    ({"JOB_COMPLETION_INDEX": "x", "QDQBENCH_SHARD_COUNT": "4"}, "JOB_COMPLETION_INDEX='x' is not a whole number"),
    ({"SLURM_ARRAY_TASK_ID": "1"}, "without SLURM_ARRAY_TASK_COUNT"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, "outside the array"),
    # --array=0-6:2 (ids 0,2,4,6): 4 tasks over 7 ids
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "6"}, "contiguous array"),
])
def test_shard_from_environment_errors(env, message):
    with pytest.raises(QdqbenchError, match=message) as exc:
        shard_from_environment(env)
    assert "\n" not in str(exc.value) and str(exc.value).startswith("--shard auto:")


def test_resolve_shard():
    assert resolve_shard(None) == (None, None)
    assert resolve_shard("2/3") == ((2, 3), "argument")
    assert resolve_shard("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}) == ((2, 2), "slurm")


def test_ls_shard_auto(tiny_suite, monkeypatch, capsys):
    from qdqbench.cli.main import main

    monkeypatch.setenv("QDQBENCH_SHARD", "1/1")
    assert main(["ls", str(tiny_suite), "--shard", "auto"]) == 0
    all_cells = capsys.readouterr().out.split()
    assert all_cells and all("/" in c for c in all_cells)
    monkeypatch.delenv("QDQBENCH_SHARD")
    for var in ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert main(["ls", str(tiny_suite), "--shard", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "QDQBENCH_SHARD" in err and "SLURM_ARRAY_TASK_ID" in err
