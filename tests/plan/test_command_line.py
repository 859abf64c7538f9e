"""The command line read once: config files with their kind, overrides with their keys."""

from __future__ import annotations

from conftest import REPO
from lit_transfer.plan.command_line import CommandLine, has_option, read_command_line

DATA = str(REPO / "configs/data/digits_shift.yaml")
MODEL = str(REPO / "configs/model/small_cnn.yaml")


def test_configs_and_overrides_are_typed_parts():
    command = CommandLine.parse(["fit", "--config", DATA, "-c", MODEL, "--model.lr", "0.1",
                                 "--trainer.callbacks.init_args.x=1", "--verbose"])
    assert command.subcommand == "fit"
    assert [(c.path, c.kind) for c in command.configs] == [(DATA, "experiment"), (MODEL, "experiment")]
    assert [(o.key, o.tokens) for o in command.overrides] == [
        ("model.lr", ("--model.lr", "0.1")), ("trainer.callbacks.x", ("--trainer.callbacks.init_args.x=1",)),
        ("verbose", ("--verbose",))]


def test_the_strategy_and_protocol_the_command_names_are_marked_target_only(tmp_path):
    mine = tmp_path / "my_strategy.yaml"
    mine.write_text("run:\n  strategy: mine\n")
    args, command = read_command_line(["fit", "--config", DATA, "--config", MODEL, f"--strategy={mine}",
                                       "--protocol", "fewshot"])
    kinds = {c.path: c.kind for c in command.configs}
    assert kinds[str(mine)] == "strategy" and kinds[DATA] == "experiment"
    assert [c.kind for c in command.configs].count("protocol") == 1
    assert args[args.index("fit") + 2] == str(mine)  # the strategy config comes first
    assert has_option(args, "--protocol") and not has_option(args, "--model")
