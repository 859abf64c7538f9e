"""A config file names its recipe (``protocol: NAME``): applied after the last ``--config``, the flags after the
configs still win, ``--protocol=null`` leaves it out, and neither the saved run config nor a source stage
applies it again."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO
from lit_transfer.cli import main
from lit_transfer.plan.command_line import _chosen, expand_protocol
from lit_transfer.plan.command_line import CommandLine
from lit_transfer.source_stage import source_stage_args

DATA = str(REPO / "configs/data/digits_to_digits_m.yaml")  # names `protocol: da_digits_m`
MODEL = str(REPO / "configs/model/small_cnn.yaml")  # max_epochs 15, lr 0.003
PROTOCOL = REPO / "configs/protocol/da_digits_m.yaml"


def printed(capsys, *args) -> dict:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    out = capsys.readouterr()
    assert exit_.value.code in (0, None), out.err
    return yaml.safe_load(out.out)


def emas(config: dict) -> list[dict]:
    return [c for c in config["trainer"]["callbacks"] or [] if c["class_path"].endswith("EMAWeightAveraging")]


def test_the_data_configs_protocol_wins_over_the_model_config(capsys):
    config = printed(capsys, "--config", DATA, "--config", MODEL, "--strategy", "dann")
    assert config["trainer"]["max_epochs"] == 240 and config["model"]["lr"] == 0.01  # not small_cnn's 15, 0.003
    assert [e["init_args"]["decay"] for e in emas(config)] == [0.995]
    assert config["model"]["selection"] == "entropy" and config["protocol"] == "da_digits_m"


def test_flags_after_the_configs_win_over_the_protocol(capsys):
    config = printed(capsys, "--config", DATA, "--config", MODEL, "--strategy", "dann", "--trainer.max_epochs=3",
                     "--model.lr", "0.5")
    assert config["trainer"]["max_epochs"] == 3 and config["model"]["lr"] == 0.5
    assert len(emas(config)) == 1  # the rest of the protocol still applies


def test_protocol_null_leaves_it_out(capsys):
    config = printed(capsys, "--config", DATA, "--config", MODEL, "--strategy", "dann", "--protocol=null")
    assert config["trainer"]["max_epochs"] == 15 and config["model"]["lr"] == 0.003 and not emas(config)
    assert config["protocol"] is None


def test_protocol_by_name_or_path_on_the_command_line(capsys, tmp_path):
    digits = str(REPO / "configs/data/digits_shift.yaml")  # names no protocol
    assert printed(capsys, "--config", digits, "--config", MODEL)["trainer"]["max_epochs"] == 15
    config = printed(capsys, "--config", digits, "--config", MODEL, "--protocol", "da_real")
    assert config["trainer"]["max_steps"] == 1000 and config["trainer"]["val_check_interval"] == 50
    own = tmp_path / "mine.yaml"
    own.write_text("trainer:\n  max_epochs: 7\n")
    assert printed(capsys, "--config", digits, "--config", MODEL, f"--protocol={own}")["trainer"]["max_epochs"] == 7


def test_unknown_protocol_is_one_line_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", DATA, "--protocol=nope", "--print_config"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert "unknown protocol 'nope'" in err[0] and "da_real" in err[0] and "da_digits_m" in err[0]


def test_expand_protocol_inserts_after_the_last_config_once():
    argv = ["fit", "--config", DATA, "--model.lr=0.1", f"--config={MODEL}", "--seed_everything=1"]
    out = expand_protocol(argv)
    assert out == [*argv[:5], "--config", str(PROTOCOL), "--seed_everything=1"]
    assert expand_protocol(out) == out  # applied once (the CLI expands the arguments it is given)
    assert expand_protocol([*argv, "--protocol", "null"]) == [*argv, "--protocol", "null"]
    # the last one named wins: a later config file's key, or a later flag
    assert _chosen(["--protocol=da_real", "--config", DATA], "protocol")[0] == "da_digits_m"
    assert _chosen(["--config", DATA, "--protocol=da_real"], "protocol")[0] == "da_real"


def test_a_source_stage_never_applies_the_target_runs_protocol():
    stage = source_stage_args(CommandLine.parse(["--config", DATA, "--config", MODEL, "--protocol", "da_real", "--strategy", "dann"]), 0)
    assert _chosen(stage, "protocol")[0] is None
    assert "da_real" not in " ".join(stage)


def test_the_saved_run_config_records_the_protocols_values_not_its_name(tmp_path, monkeypatch):
    """Re-running a saved config.yaml must not apply the protocol again over the overrides the run had."""
    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    protocol = tmp_path / "p.yaml"
    protocol.write_text("trainer:\n  max_epochs: 5\nmodel:\n  lr: 0.02\n")
    data = tmp_path / "data.yaml"
    data.write_text(f"protocol: {protocol}\ndata:\n  target_shots: 2\n  batch_size: 8\n")
    run = tmp_path / "run"
    main(["fit", "--config", str(data), "--config", MODEL, "--strategy", "scratch", "--trainer.max_epochs=1",
          "--trainer.limit_val_batches=1", "--run.test_after_fit=false", f"--run.dir={run}"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["protocol"] is None
    assert saved["trainer"]["max_epochs"] == 1 and saved["model"]["lr"] == 0.02
    assert json.loads((run / "result.json").read_text())["epochs"] == 1
