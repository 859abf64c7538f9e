"""The shipped DA configs carry the recipe their documented numbers used: ``lit-transfer fit --config <data>
--config configs/model/small_cnn.yaml --strategy dann`` resolves to the same budget, callbacks, optimizer, data
and selection as the trials of the benchmark's sweep file (parsed configs compared, not strings); the sweep files
add only what they vary; and the real benchmarks' sweeps are the grid the issue names."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from helpers import parsed_config
from lit_transfer.sweep import build_command, load_sweep, plan_trials

MODEL = "configs/model/small_cnn.yaml"
# shipped DA data config -> the sweep file of its documented numbers
DA = {"digits_to_digits_m": "digits_m_da", "uci_digits_to_mnist5k": "da_uci_to_mnist5k",
      "mnist5k_to_uci_digits": "da_mnist5k_to_uci", "mnist5k_to_mnist5k_m": "da_mnist5k_to_mnist5k_m"}
REAL = ["da_uci_to_mnist5k", "da_mnist5k_to_uci", "da_mnist5k_to_mnist5k_m"]


def sweep_trial(capsys, sweep: str, tmp_path, **params) -> dict:
    cfg = load_sweep(REPO / "sweeps" / f"{sweep}.yaml")
    cmd = build_command(cfg, {"strategy": "dann", "seed_everything": 0, **params}, tmp_path / "trial")
    return parsed_config(cmd[cmd.index("fit"):-2], capsys)  # without --run.dir


def test_every_da_data_config_naming_a_protocol_has_its_sweep():
    named = {p.stem for p in (REPO / "configs" / "data").glob("*.yaml")
             if str(yaml.safe_load(p.read_text()).get("protocol", "")).startswith("da_")}
    assert named == set(DA)
    for data, sweep in DA.items():
        cmd = load_sweep(REPO / "sweeps" / f"{sweep}.yaml")["command"]
        assert cmd[cmd.index("fit") + 1:] == ["--config", f"configs/data/{data}.yaml", "--config", MODEL, "${args}"]


@pytest.mark.parametrize("data", sorted(DA))
def test_fit_with_the_shipped_configs_trains_what_the_sweep_measured(capsys, tmp_path, data):
    plain = parsed_config(["fit", "--config", f"configs/data/{data}.yaml", "--config", MODEL, "--strategy", "dann"], capsys)
    trial = sweep_trial(capsys, DA[data], tmp_path)
    for section in ("trainer", "model", "data"):
        assert plain[section] == trial[section], section
    assert plain["seed_everything"] == trial["seed_everything"] == 0
    # the recipe, not the model config's defaults (15 epochs, lr 0.003, AdamW, no averaging)
    trainer, model = plain["trainer"], plain["model"]
    ema = [c for c in trainer["callbacks"] if c["class_path"] == "lightning.pytorch.callbacks.EMAWeightAveraging"]
    assert [c["init_args"]["decay"] for c in ema] == [0.995]
    assert model["lr"] == 0.01 and model["optimizer"]["class_path"] == "torch.optim.SGD"
    assert model["selection"] == "entropy"  # label-free, as shipped
    if data == "digits_to_digits_m":
        assert trainer["max_epochs"] == 240
    else:
        assert (trainer["max_steps"], trainer["max_epochs"], trainer["val_check_interval"]) == (1000, -1, 50)
        assert plain["data"]["source"]["image_size"] == plain["data"]["target"]["image_size"] == 28
        assert plain["data"]["split_seed"] is None  # the CLI sets it to the run's seed: each seed its own split


@pytest.mark.parametrize("sweep", REAL)
def test_real_da_sweeps_are_six_rows_by_five_seeds(sweep):
    cfg = load_sweep(REPO / "sweeps" / f"{sweep}.yaml")
    trials = plan_trials(cfg)
    assert len(trials) == 30
    assert {t["strategy"] for t in trials} == {"source_only", "dann", "cdan", "mcc", "dann_mcc", "target_oracle"}
    assert {t["seed_everything"] for t in trials} == {0, 1, 2, 3, 4}
    text = (REPO / "sweeps" / f"{sweep}.yaml").read_text()
    assert (f"lit-transfer sweep sweeps/{sweep}.yaml --workers 2 --threads 1 && lit-transfer report "
            f"sweep_runs/{sweep} --baseline source_only") in text


@pytest.mark.parametrize("sweep", REAL)
def test_every_trial_of_the_real_da_sweeps_resolves(capsys, tmp_path, sweep):
    cfg = load_sweep(REPO / "sweeps" / f"{sweep}.yaml")
    for trial in plan_trials(cfg):
        cmd = build_command(cfg, trial, tmp_path / "trial")
        config = parsed_config(cmd[cmd.index("fit"):-2], capsys)
        assert (config["run"]["strategy"], config["seed_everything"]) == (trial["strategy"], trial["seed_everything"])
        assert config["protocol"] == "da_real" and config["trainer"]["max_steps"] == 1000


@pytest.mark.parametrize("strategy", ["source_only", "cdan", "target_oracle"])
def test_every_row_of_a_real_sweep_gets_the_same_recipe(capsys, tmp_path, strategy):
    row = sweep_trial(capsys, "da_mnist5k_to_mnist5k_m", tmp_path, strategy=strategy, seed_everything=3)
    dann = sweep_trial(capsys, "da_mnist5k_to_mnist5k_m", tmp_path)
    assert row["trainer"] == dann["trainer"] and row["seed_everything"] == 3
    for key in ("lr", "optimizer", "lr_scheduler", "selection", "bottleneck", "backbone", "weights"):
        assert row["model"][key] == dann["model"][key], key
    if strategy == "cdan":  # CDAN+E: entropy conditioning
        assert row["model"]["objective"][0]["init_args"]["entropy_conditioning"] is True
    if strategy == "target_oracle":  # the ceiling: trained on the target's labels, all of them
        assert row["data"]["train_on"] == "target" and row["data"]["target_shots"] is None
        assert row["data"]["unlabeled_target"] is False and row["model"]["objective"] is None
    else:
        assert row["data"]["train_on"] == "source"


def test_the_few_shot_use_of_the_cross_dataset_configs_is_one_documented_command_away(capsys):
    path = REPO / "configs/data/uci_digits_to_mnist5k.yaml"
    flags = ["--protocol=null", "--data.target_shots=10", "--model.selection=auto", "--data.split_seed=0"]
    assert " ".join(flags) in path.read_text()
    config = parsed_config(["fit", "--config", str(path), "--config", MODEL, "--strategy", "finetune", *flags], capsys)
    assert config["trainer"]["max_epochs"] == 15 and config["model"]["lr"] == 0.003  # the model config's budget
    assert config["data"]["target_shots"] == 10 and config["model"]["selection"] == "auto"
    assert not any("EMA" in c["class_path"] for c in config["trainer"]["callbacks"] or [])
