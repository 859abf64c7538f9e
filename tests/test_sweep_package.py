"""The sweep package split by job: spec modules apart from the runner, every piece small, no argv scanning
(the command line is read through lit_transfer.plan.command_line) and one reader of results (lit_transfer.results)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from lit_transfer.plan.command_line import set_process_args, without_options
from lit_transfer.sweep import trial_state
from lit_transfer.sweep.identity import command_identity, command_inputs
from lit_transfer.sweep.trials import failure_reason

SWEEP = Path(__file__).resolve().parent.parent / "lit_transfer" / "sweep"
SPEC = ("errors", "distributions", "spec", "planning", "command", "identity")


def _trees():
    return {path.stem: ast.parse(path.read_text()) for path in SWEEP.glob("*.py")}


def test_every_module_and_class_is_small():
    for name, tree in _trees().items():
        assert len((SWEEP / f"{name}.py").read_text().splitlines()) < 450, name
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 < 250, (name, node.name)


def test_the_spec_does_not_import_the_runner():
    for name in SPEC:
        for node in ast.walk(_trees()[name]):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lit_transfer.sweep."):
                assert node.module.rsplit(".", 1)[-1] in SPEC, (name, node.module)


def test_no_argv_read_or_option_scan_in_the_sweep_package():
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "argv":
                raise AssertionError(f"{name}.py reads sys.argv at line {node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "startswith":
                consts = [c for a in node.args for c in ([a] if isinstance(a, ast.Constant) else
                                                          getattr(a, "elts", []))]
                assert not any(isinstance(c, ast.Constant) and str(c.value).startswith("-") for c in consts), \
                    f"{name}.py scans an option at line {node.lineno}"


def test_the_ok_rule_and_the_headline_metric_are_not_restated():
    for path in SWEEP.glob("*.py"):
        text = path.read_text()
        assert 'get("status", "ok")' not in text and '"target/test_acc"' not in text, path.name


def test_without_options_drops_both_forms_with_their_values():
    argv = ["fit", "--run.dir", "/a", "--x=1", "--run.stage_cache=/s", "--run.stage_cache", "/t", "--run.dirt=2"]
    assert without_options(argv, ("--run.dir", "--run.stage_cache")) == ["fit", "--x=1", "--run.dirt=2"]
    assert without_options(["--run.dir=/a", "--flag", "--y", "2"], ("--run.dir",)) == ["--flag", "--y", "2"]


def test_set_process_args_makes_this_process_a_lit_transfer_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    set_process_args(["fit", "--x=1"])
    assert sys.argv == ["lit-transfer", "fit", "--x=1"]


def test_identity_is_the_command_without_where_it_runs(tmp_path):
    cmd = ["/usr/bin/env", "/venv/bin/python3.11", "-m", "lit_transfer", "fit", "--model.lr=0.1",
           "--run.stage_cache=/out/stages", "--run.dir", "/out/trials/t"]
    assert command_identity(cmd) == ["/usr/bin/env", "${interpreter}", "-m", "lit_transfer", "fit",
                                     "--model.lr=0.1"]
    config = tmp_path / "c.yaml"
    config.write_text("seed_everything: 1\n")
    inputs = command_inputs(["fit", "--config", str(config), f"-c={config}", "--config=/no/such.yaml"])
    assert list(inputs) == [str(config)] and len(inputs[str(config)]) == 16


def test_trial_state_and_failure_reason_read_results_through_the_result_type(tmp_path):
    def trial(name, result):
        d = tmp_path / name
        d.mkdir()
        if result is not None:
            (d / "result.json").write_text(result if isinstance(result, str) else json.dumps(result))
        return d

    assert trial_state(trial("old", {"metrics": {}})) == "ok"  # written before `status` existed: ok
    diverged = trial("diverged", {"status": "diverged", "error": "loss is nan at step 3"})
    assert trial_state(diverged) == "failed"
    assert failure_reason(diverged) == "diverged: loss is nan at step 3"
    bare = trial("bare", {"status": "failed"})
    assert failure_reason(bare) == "failed: no reason recorded"
    assert trial_state(trial("garbled", "{not json")) == "failed"
    assert trial_state(trial("never", None)) == "pending"
    (tmp_path / "never" / "trial.log").write_text("x\nlit-transfer: error: unknown backbone 'r'\n")
    assert failure_reason(tmp_path / "never") == "unknown backbone 'r'"
