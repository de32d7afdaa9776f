"""The command line: exit codes and one-line errors for bad input, before any heavy work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qdqbench.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_ls_prints_the_matrix_without_importing_torch():
    code = (
        "import sys; from qdqbench.cli import main; rc = main(['ls', 'suites/quickstart.yaml']); "
        "assert 'torch' not in sys.modules, 'ls imported torch'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert "minilm/pydoc/int8-max/onnxruntime/latency/b8s128" in lines
    assert proc.stderr.strip().endswith("cells")


def test_ls_json(capsys):
    assert main(["ls", str(REPO / "suites/quickstart.yaml"), "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["kind"] for r in rows} == {"export", "fidelity", "latency"}


def test_validate_ok(capsys, tiny_suite):
    assert main(["validate", str(tiny_suite)]) == 0
    assert "ok (" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["models"]["tiny"].__setitem__("path", "/does/not/exist"),
         "model 'tiny': path /does/not/exist does not exist"),
        (lambda d: d["tasks"]["sst2"].__setitem__("name", "sst3"), "tasks.sst2: unknown task 'sst3'"),
        (lambda d: d["tasks"]["sst2"].__setitem__("data_dir", "/no/glue"),
         "tasks.sst2.data_dir: /no/glue does not exist"),
        (lambda d: d["schemes"]["int8-max"].__setitem__("groupz", ["linear"]), "unknown key (did you mean 'groups'?)"),
        (lambda d: d["models"]["tiny"].update(path=None, package="no-such-package-xyz"),
         "pip package 'no-such-package-xyz' is not installed"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, tiny_suite, capsys, mutate, expected):
    data = yaml.safe_load(tiny_suite.read_text())
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    for cmd in (["validate", str(p)], ["run", str(p), "--out", str(tmp_path / "runs"), "--quiet"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_bad_set_and_model_path(tiny_suite, capsys):
    assert main(["validate", str(tiny_suite), "--set", "schemes.int8-max.bits"]) == 2
    assert "expected KEY.PATH=VALUE" in capsys.readouterr().err
    assert main(["validate", str(tiny_suite), "--set", "schemes.int8-max.bits=3"]) == 2
    assert "schemes.int8-max.bits" in capsys.readouterr().err
    assert main(["validate", str(tiny_suite), "--model-path", "nope"]) == 2
    assert "expected ID=DIR" in capsys.readouterr().err


def test_missing_suite_file(capsys, tmp_path):
    assert main(["validate", str(tmp_path / "x.yaml")]) == 2
    assert "suite file not found" in capsys.readouterr().err


def test_offline_hub_model_is_one_line(tmp_path, tiny_suite, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    data = yaml.safe_load(tiny_suite.read_text())
    data["models"]["tiny"] = {"hub": "someone/not-cached-bert", "tasks": ["sst2"]}
    data["backends"] = ["torch"]
    p = tmp_path / "hub.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    for cmd in (["validate", str(p)], ["run", str(p), "--out", str(tmp_path / "runs"), "--quiet"]):
        assert main(cmd) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "Hub id 'someone/not-cached-bert' not in the local cache and HF_HUB_OFFLINE is set" in line
        assert "--model-path tiny=DIR" in line
    assert not (tmp_path / "runs").exists()


def test_report_of_a_missing_run_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_env_prints_json(capsys):
    assert main(["env"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["python"] and "cpu" in info["machine"]


def test_bad_shard_and_gate_are_input_errors(tiny_suite, capsys):
    assert main(["ls", str(tiny_suite), "--shard", "3/2"]) == 2
    assert "shard" in capsys.readouterr().err
    assert main(["run", str(tiny_suite), "--fail-on", "acuracy-drop>1%"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean" in err[0]


def test_readme_exit_code_table_matches_the_cli():
    """README's exit-code table lists exactly the codes the CLI returns (one list: EXIT_CODES)."""
    import re

    from qdqbench.cli import EXIT_CODES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("Exit codes (the same for every command"):]
    table = table[: table.index("\n\n", table.index("| code |"))]
    documented = {int(c) for row in table.splitlines()[2:] for c in re.findall(r"`(\d+)`", row.split("|")[1])}
    assert documented == set(EXIT_CODES)
