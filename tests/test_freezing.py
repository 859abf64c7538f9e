"""Freezing by layer group and by name pattern (lit_transfer.freezing), BitFit as a YAML file, over real steps."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml

from conftest import REPO, make_dm, make_module, make_trainer
from lit_transfer.errors import TransferConfigError
from lit_transfer.freezing import Freezing, matches, select_parameters
from lit_transfer.strategies import FinetuningSchedule
from lit_transfer.strategies.objective import SourceHeadUse


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def network_params(module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if n.startswith(("backbone.", "bottleneck.", "head."))}


def bitfit_schedule() -> FinetuningSchedule:
    cfg = yaml.safe_load((REPO / "configs" / "strategy" / "bitfit.yaml").read_text())
    (cb,) = cfg["trainer"]["callbacks"]
    assert cb["class_path"] == "lit_transfer.strategies.FinetuningSchedule"
    return FinetuningSchedule(**cb["init_args"])


def fit_bitfit(tmp_path, epochs=2, **module_kwargs):
    L.seed_everything(0)
    module = make_module(lr=0.05, **module_kwargs)
    before = snapshot(module)
    make_trainer(tmp_path, max_epochs=epochs, callbacks=[bitfit_schedule()]).fit(module, make_dm())
    return module, before


# ------------------------------------------------------------------------------------------------ BitFit
def test_bitfit_trains_exactly_the_biases_and_the_head(tmp_path):
    module, _ = fit_bitfit(tmp_path, epochs=1)
    params = network_params(module)
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert all(n.endswith(".bias") or n.startswith("head.") for n in trainable), trainable
    assert {n for n in params if n.endswith(".bias")} <= trainable  # every bias trains
    assert {n for n in params if n.startswith("head.")} <= trainable
    assert any(n.startswith("backbone.") and n.endswith(".bias") for n in trainable)
    frozen = set(params) - trainable
    # every backbone weight (convolutions and BatchNorm gammas) is frozen
    assert frozen == {n for n in params if n.startswith("backbone.") and n.endswith(".weight")}


def test_bitfit_changes_only_biases_and_head_and_keeps_batchnorm_statistics(tmp_path):
    module, before = fit_bitfit(tmp_path, epochs=2)
    after = module.state_dict()
    params = network_params(module)
    for name, p in params.items():
        changed = not torch.equal(before[name], after[name])
        assert changed == p.requires_grad, f"{name}: changed={changed}, trainable={p.requires_grad}"
    bn_stats = [k for k in after if k.startswith("backbone.") and k.endswith(("running_mean", "running_var",
                                                                             "num_batches_tracked"))]
    assert bn_stats
    for key in bn_stats:  # frozen BN layers: running statistics never updated by the target batches
        assert torch.equal(before[key], after[key]), key


def test_bitfit_never_trains_on_cached_features(tmp_path):
    """Every layer group is frozen, but the biases train: embeddings change every step, nothing to cache."""
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch[0].ndim)

    L.seed_everything(0)
    module = make_module()  # the default FeatureCaching is on
    make_trainer(tmp_path, max_epochs=1, callbacks=[bitfit_schedule(), Record()]).fit(module, make_dm())
    assert seen and set(seen) == {4}  # images, never [B, D] feature rows


def test_bitfit_config_parses_through_the_cli(tmp_path, monkeypatch):
    from lit_transfer.cli import TransferCLI
    from lit_transfer.plan.command_line import expand_strategy

    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    args = expand_strategy(["--config", str(REPO / "configs/data/digits_shift.yaml"), "--config",
                            str(REPO / "configs/model/small_cnn.yaml"), "--strategy", "bitfit",
                            f"--run.root={tmp_path}"])
    cli = TransferCLI(args=args, run=False)
    (schedule,) = [c for c in cli.trainer.callbacks if isinstance(c, FinetuningSchedule)]
    assert schedule.phases[0].trainable == ["*.bias"] and schedule.phases[0].frozen == "all"


# ------------------------------------------------------------------------------------------ name patterns
def test_patterns_fnmatch_and_regex():
    assert matches("backbone.model.stem.1.bias", ["*.bias"])
    assert matches("backbone.model.stem.0.weight", ["backbone.model.stem.*"])
    assert not matches("backbone.model.stages.0.0.0.weight", ["backbone.model.stem.*"])
    assert matches("backbone.model.stages.1.0.1.weight", [r"re:backbone\.model\.stages\.1\..*\.1\.weight"])
    assert not matches("backbone.model.stages.1.0.1.weight", [r"re:stages\.1"])  # a regex matches the whole name


def test_a_pattern_that_matches_nothing_is_a_config_error(tmp_path):
    with pytest.raises(TransferConfigError, match="matches no parameter"):
        make_module(frozen_params=["backbone.model.layer9.*"])
    schedule = FinetuningSchedule([{"epoch": 0, "frozen": 0, "freeze": ["backbone.typo.*"]}])
    with pytest.raises(TransferConfigError, match="matches no parameter"):
        make_trainer(tmp_path, max_epochs=1, callbacks=[schedule]).fit(make_module(), make_dm())
    assert select_parameters(make_module(), ["head.*"]) == ["head.fc.weight", "head.fc.bias"]


def test_frozen_params_stay_frozen_when_a_schedule_unfreezes_everything(tmp_path):
    """The bug a per-epoch ``requires_grad = group not frozen`` has: it re-enables pattern-frozen weights."""
    L.seed_everything(0)
    module = make_module(lr=0.05, frozen_params=["backbone.model.stem.*"])
    before = snapshot(module)
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append([p.requires_grad for p in pl_module.backbone.group_parameters(0)])

    schedule = FinetuningSchedule([{"epoch": 0, "frozen": "all"}, {"epoch": 1, "frozen": 0}])
    make_trainer(tmp_path, max_epochs=3, callbacks=[schedule, Record()]).fit(module, make_dm())
    assert seen == [[False, False, False]] * 3
    after = module.state_dict()
    stem = [k for k in after if k.startswith("backbone.model.stem.")]
    assert stem and all(torch.equal(before[k], after[k]) for k in stem)  # weights and BN statistics
    later = [k for k in after if k.startswith("backbone.model.stages.") and k.endswith("weight")]
    assert all(not torch.equal(before[k], after[k]) for k in later)  # the rest did unfreeze and train


def test_phase_freeze_and_trainable_patterns(tmp_path):
    """A phase can freeze by pattern on top of its groups and keep a pattern trainable inside frozen groups."""
    module = make_module()
    freezing = module.freezing
    freezing.set(module, 1, freeze=["backbone.model.stages.1.*"], trainable=["backbone.model.stem.1.*"])
    trainable = {n for n, p in network_params(module).items() if p.requires_grad}
    assert trainable == {"backbone.model.stem.1.weight", "backbone.model.stem.1.bias",
                         *(n for n in network_params(module) if n.startswith(("backbone.model.stages.0.", "head.")))}
    # stem's BatchNorm is in a frozen group: its statistics stay frozen although its affine weights train;
    # stages.1's BatchNorms have every parameter frozen by pattern: frozen statistics too
    module.train()
    frozen_norms = {id(m) for m in freezing.frozen_norm_modules()}
    bns = dict(module.backbone.model.named_modules())
    assert id(bns["stem.1"]) in frozen_norms and not bns["stem.1"].training
    assert id(bns["stages.1.0.1"]) in frozen_norms and not bns["stages.1.0.1"].training
    assert id(bns["stages.0.0.1"]) not in frozen_norms and bns["stages.0.0.1"].training
    # back to everything trainable: norm layers return to train mode at once (not at the next train() call)
    freezing.set(module, 0)
    assert all(p.requires_grad for p in network_params(module).values())
    assert freezing.frozen_norm_modules() == [] and bns["stem.1"].training


def test_freezing_leaves_modules_outside_the_network_alone():
    """A frozen teacher or source head keeps its own requires_grad whatever the phase says."""
    module = make_module()
    module.use_source_head(SourceHeadUse(trainable=False))
    Freezing().set(module, 0)
    assert not any(p.requires_grad for p in module.source_head.parameters())
    module.source_head.requires_grad_(True)
    Freezing().set(module, module.num_groups)
    assert all(p.requires_grad for p in module.source_head.parameters())
