"""Strategies over real training steps: trainable sets, frozen means frozen, resume, LR schedulers."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from conftest import REPO, make_dm, make_module, make_trainer
from lit_transfer.strategies import L2SP, FinetuningSchedule, GradualUnfreezing, Phase


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def group_keys(module, index: int) -> list[str]:
    """state_dict keys (parameters and BatchNorm buffers) of backbone layer group ``index``."""
    params = module.backbone.groups[index].param_names
    prefixes = {p.rsplit(".", 1)[0] for p in params}
    return [k for k in module.state_dict() if k.startswith("backbone.model.") and
            k[len("backbone.model."):].rsplit(".", 1)[0] in prefixes]


def trainable_groups(module) -> list[bool]:
    return [all(p.requires_grad for p in module.backbone.group_parameters(i)) for i in range(module.num_groups)]


def schedule_from_yaml(name: str):
    """The callback (if any) a shipped strategy YAML configures, built the way the CLI builds it."""
    cfg = yaml.safe_load((REPO / "configs" / "strategy" / f"{name}.yaml").read_text())
    out = []
    for cb in cfg.get("trainer", {}).get("callbacks", []):
        cls = {"FinetuningSchedule": FinetuningSchedule, "GradualUnfreezing": GradualUnfreezing}[cb["class_path"].split(".")[-1]]
        out.append(cls(**cb.get("init_args", {})))
    return cfg, out


# Expected trainable backbone groups at the end of a 2-epoch run (small_cnn_tiny has 3 groups).
@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("scratch", [True, True, True]),
        ("finetune", [True, True, True]),
        ("layer_decay", [True, True, True]),
        ("l2sp", [True, True, True]),
        ("linear_probe", [False, False, False]),
        ("partial_freeze", [False, False, True]),
        ("freeze_unfreeze", [True, True, True]),  # unfreezes at 20% of the budget (epoch 1 of 2)
        ("lp_ft", [True, True, True]),  # fine-tunes from 50% of the budget (epoch 1 of 2)
        ("gradual_unfreeze", [False, False, False]),  # first group at epoch 2
    ],
)
def test_strategy_trainable_set_after_real_training(tmp_path, strategy, expected):
    cfg, callbacks = schedule_from_yaml(strategy)
    model_cfg = dict(cfg.get("model", {}))
    kwargs = {}
    if "regularizer" in model_cfg:
        kwargs["regularizer"] = L2SP(**model_cfg["regularizer"]["init_args"])
    for key in ("layer_decay", "backbone_lr_scale", "lr"):
        if key in model_cfg:
            kwargs[key] = model_cfg[key]
    L.seed_everything(0)
    module = make_module(**kwargs)
    before = snapshot(module)
    make_trainer(tmp_path, max_epochs=2, callbacks=callbacks).fit(module, make_dm())
    assert trainable_groups(module) == expected
    assert all(p.requires_grad for p in module.head.parameters())
    after = module.state_dict()
    for i, trainable in enumerate(expected):
        changed = any(not torch.equal(before[k], after[k]) for k in group_keys(module, i))
        assert changed == trainable, f"group {i} changed={changed} but trainable={trainable}"
    assert not torch.equal(before["head.fc.weight"], after["head.fc.weight"])


def test_layer_decay_sets_discriminative_learning_rates():
    module = make_module(lr=1e-2, layer_decay=0.5, backbone_lr_scale=1.0)
    module.trainer = None
    opt = module.optimizer_factory(module.param_groups())
    lrs = {}
    for g in opt.param_groups:
        lrs[g["layer_group"]] = module.hparams.lr * g["lr_scale"]
    # 3 groups: group i gets lr * 0.5 ** (3 - i); the head (-1) gets lr.
    assert lrs == pytest.approx({0: 1e-2 * 0.125, 1: 1e-2 * 0.25, 2: 1e-2 * 0.5, -1: 1e-2})


def test_no_weight_decay_on_norms_and_biases():
    module = make_module()
    for group in module.param_groups():
        if group["name"].endswith(".no_decay"):
            assert group["weight_decay"] == 0.0
            assert all(p.ndim <= 1 for p in group["params"])
        else:
            assert "weight_decay" not in group and all(p.ndim > 1 for p in group["params"])


def test_progress_phases_scale_with_the_step_budget(tmp_path):
    """A budget-relative schedule unfreezes at the same fraction of any budget; epoch and progress don't mix."""
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"], trainable_groups(pl_module)))

    phases = [{"progress": 0.0, "frozen": "all"}, {"progress": 0.5, "frozen": 0, "lr_scale": 0.1}]
    for steps in (6, 12):  # 3 batches per epoch (50 shots, batch 16)
        seen.clear()
        module = make_module(lr=1e-2)
        make_trainer(tmp_path / str(steps), max_epochs=-1, max_steps=steps,
                     callbacks=[FinetuningSchedule(phases), Record()]).fit(module, make_dm())
        switch = next(step for step, _, groups in seen if all(groups))
        assert switch == steps // 2  # the first epoch start at or past half of the budget
        assert all(not any(g) for step, _, g in seen if step < switch)
        lrs = {step: lr for step, lr, _ in seen}
        assert lrs[0] == pytest.approx(1e-2 * module.param_groups()[0]["lr_scale"])
        assert lrs[switch] == pytest.approx(lrs[0] * 0.1)
    with pytest.raises(ValueError, match="either `epoch` or `progress`"):
        FinetuningSchedule([{"epoch": 0, "frozen": "all"}, {"progress": 0.5, "frozen": 0}])
    with pytest.raises(ValueError, match="0 <= progress < 1"):
        FinetuningSchedule([{"progress": 0.0, "frozen": "all"}, {"progress": 1.5, "frozen": 0}])


def test_gradual_unfreezing_unfreezes_top_down_one_group_per_epoch(tmp_path):
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainable_groups(pl_module))

    module = make_module()
    trainer = make_trainer(tmp_path, max_epochs=5, callbacks=[GradualUnfreezing(every_n_epochs=1, start_epoch=1), Record()])
    trainer.fit(module, make_dm())
    assert seen == [
        [False, False, False],
        [False, False, True],
        [False, True, True],
        [True, True, True],
        [True, True, True],
    ]


@pytest.mark.parametrize("phases", [[{"epoch": 0, "frozen": "all"}], [{"epoch": 0, "frozen": 2}]])
def test_frozen_means_frozen_weights_and_batchnorm_statistics(tmp_path, phases):
    module = make_module()
    before = snapshot(module)
    make_trainer(tmp_path, max_epochs=2, callbacks=[FinetuningSchedule(phases)]).fit(module, make_dm())
    after = module.state_dict()
    frozen = module.freezing.frozen_groups
    for i in range(module.num_groups):
        keys = group_keys(module, i)
        stats = [k for k in keys if k.endswith(("running_mean", "running_var"))]
        assert stats, "every small_cnn group has BatchNorm statistics"
        same = all(torch.equal(before[k], after[k]) for k in keys)
        assert same == (i < frozen), f"group {i}: unchanged={same}, frozen={i < frozen}"
    # the frozen groups' BatchNorm layers are in eval mode while the module trains
    module.train()
    assert module.freezing.frozen_norm_modules() and all(not m.training for m in module.freezing.frozen_norm_modules())


def test_frozen_batchnorm_stays_in_eval_mode_after_validation(tmp_path):
    modes = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append([m.training for m in pl_module.freezing.frozen_norm_modules()])

    module = make_module()
    make_trainer(tmp_path, max_epochs=3, callbacks=[FinetuningSchedule([{"epoch": 0, "frozen": "all"}]), Record()]).fit(
        module, make_dm()
    )
    assert modes and all(not any(m) for m in modes)


# ---------------------------------------------------------------------------------------------- resume
SCHEDULE = [Phase(epoch=0, frozen="all"), Phase(epoch=2, frozen=0, lr_scale=0.1)]


def run(root, max_epochs, ckpt_path=None, scheduler=None):
    L.seed_everything(0)
    module = make_module(lr_scheduler=scheduler)
    trainer = make_trainer(root, max_epochs=max_epochs, callbacks=[FinetuningSchedule(SCHEDULE)])
    trainer.fit(module, make_dm(), ckpt_path=ckpt_path)
    return module, trainer


@pytest.mark.parametrize("stop_epoch", [1, 3], ids=["before-unfreeze", "after-unfreeze"])
def test_resume_mid_schedule_matches_uninterrupted_run(tmp_path, stop_epoch):
    scheduler = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=4)
    full, full_trainer = run(tmp_path / "full", 4, scheduler=scheduler)
    run(tmp_path / "part", stop_epoch, scheduler=scheduler)
    resumed, resumed_trainer = run(tmp_path / "resumed", 4, ckpt_path=tmp_path / "part" / "ckpt" / "last.ckpt",
                                   scheduler=scheduler)
    # Lightning's BackboneFinetuning re-freezes the backbone here; the schedule re-derives it from the epoch.
    assert trainable_groups(resumed) == [True, True, True]
    full_sd, resumed_sd = full.state_dict(), resumed.state_dict()
    for key in full_sd:
        torch.testing.assert_close(resumed_sd[key], full_sd[key], rtol=0, atol=1e-6, msg=key)
    full_lrs = [g["lr"] for g in full_trainer.optimizers[0].param_groups]
    resumed_lrs = [g["lr"] for g in resumed_trainer.optimizers[0].param_groups]
    assert resumed_lrs == pytest.approx(full_lrs, rel=1e-9)


# ----------------------------------------------------------------------------------------- schedulers
class RecordLR(L.Callback):
    def __init__(self):
        self.lrs: list[dict[int, float]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        # after the schedule callback (registered first) has applied the phase
        self.lrs.append({g["layer_group"]: g["lr"] for g in trainer.optimizers[0].param_groups})


def fit_with_scheduler(tmp_path, scheduler, epochs=5):
    L.seed_everything(0)
    record = RecordLR()
    module = make_module(lr=0.1, lr_scheduler=scheduler)
    trainer = make_trainer(tmp_path, max_epochs=epochs, callbacks=[FinetuningSchedule(SCHEDULE), record])
    trainer.fit(module, make_dm())
    return record.lrs, trainer


def test_cosine_schedule_continues_across_unfreeze_with_lr_scale(tmp_path):
    import math

    lrs, trainer = fit_with_scheduler(tmp_path, functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=5))
    for epoch, per_group in enumerate(lrs):
        scale = 1.0 if epoch < 2 else 0.1
        expected = 0.1 * scale * 0.5 * (1 + math.cos(math.pi * epoch / 5))
        for group, lr in per_group.items():
            assert lr == pytest.approx(expected, rel=1e-6), (epoch, group)
    # no param group was added at the unfreeze: every group existed from the first step
    assert len(trainer.optimizers[0].param_groups) == len(make_module().param_groups())


def test_step_schedule_continues_across_unfreeze(tmp_path):
    lrs, _ = fit_with_scheduler(tmp_path, functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2, gamma=0.5))
    expected = [0.1, 0.1, 0.1 * 0.5 * 0.1, 0.1 * 0.5 * 0.1, 0.1 * 0.25 * 0.1]
    assert [next(iter(e.values())) for e in lrs] == pytest.approx(expected, rel=1e-6)
    assert all(len(set(e.values())) == 1 for e in lrs)


def test_reduce_on_plateau_keeps_working_across_unfreeze(tmp_path):
    # patience 0 + a val_acc that cannot improve by 1.0 forces a reduction after every epoch
    sched = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max", factor=0.5, patience=0,
                              threshold=1.0, threshold_mode="abs")
    lrs, trainer = fit_with_scheduler(tmp_path, sched)
    heads = [e[-1] for e in lrs]
    # the first epoch sets the best value; every later epoch end halves; the unfreeze at epoch 2 scales by 0.1
    assert heads == pytest.approx([0.1, 0.1, 0.05 * 0.1, 0.025 * 0.1, 0.0125 * 0.1], rel=1e-6)


def test_param_counts_logged_at_fit_start_and_every_freeze_change(tmp_path):
    import csv

    from lightning.pytorch.loggers import CSVLogger

    module = make_module()
    logger = CSVLogger(tmp_path, name="logs", version="")
    schedule = FinetuningSchedule([{"epoch": 0, "frozen": "all"}, {"epoch": 1, "frozen": 1}])
    make_trainer(tmp_path, max_epochs=2, callbacks=[schedule], logger=logger).fit(module, make_dm())
    rows = list(csv.DictReader(open(tmp_path / "logs" / "metrics.csv")))
    counts = [int(float(r["params/trainable"])) for r in rows if r.get("params/trainable")]
    total = int(float(next(r["params/total"] for r in rows if r.get("params/total"))))
    head = sum(p.numel() for p in module.head.parameters())
    stem = sum(p.numel() for p in module.backbone.group_parameters(0))
    assert counts == [total, head, total - stem]  # fit start, frozen all, frozen 1


# ------------------------------------------------------------------------ unfreezing vs linear probe
class RecordStates(L.Callback):
    """The whole state at each train epoch start, and at the end of training."""

    def __init__(self):
        self.at_epoch_start: list[dict[str, torch.Tensor]] = []
        self.final: dict[str, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.at_epoch_start.append(snapshot(pl_module))

    def on_train_end(self, trainer, pl_module):
        self.final = snapshot(pl_module)


def fit_strategy(root, name, epochs=4):
    cfg, callbacks = schedule_from_yaml(name)
    model_cfg = cfg.get("model", {})
    L.seed_everything(0)
    module = make_module(lr=0.05, **{k: model_cfg[k] for k in ("backbone_lr_scale",) if k in model_cfg})
    record = RecordStates()
    make_trainer(root, max_epochs=epochs, callbacks=[*callbacks, record]).fit(module, make_dm())
    return module, record


def backbone_keys(module) -> list[str]:
    return [k for k in module.state_dict() if k.startswith("backbone.model.")]


@pytest.mark.parametrize("strategy, unfreeze_epoch, groups_trained", [
    ("freeze_unfreeze", 1, [0, 1, 2]),  # progress 0.2 of 12 steps: the first epoch start at step >= 2.4
    ("lp_ft", 2, [0, 1, 2]),  # progress 0.5: step 6
    ("gradual_unfreeze", 2, [1, 2]),  # group 2 from epoch 2, group 1 from epoch 3, the stem from epoch 4
])
def test_unfreezing_strategies_equal_linear_probe_until_the_unfreeze_then_differ(
        tmp_path, strategy, unfreeze_epoch, groups_trained):
    lp_module, lp = fit_strategy(tmp_path / "lp", "linear_probe")
    module, run = fit_strategy(tmp_path / strategy, strategy)
    keys = backbone_keys(module)
    initial = lp.at_epoch_start[0]
    # the linear probe never changes its backbone (weights and BatchNorm statistics)
    assert all(torch.equal(lp.final[k], initial[k]) for k in keys)
    # up to the unfreeze point the strategy *is* a linear probe: same head, same (unchanged) backbone
    for epoch in range(unfreeze_epoch + 1):
        for k, v in lp.at_epoch_start[epoch].items():
            assert torch.equal(run.at_epoch_start[epoch][k], v), (epoch, k)
    # after it, the backbone trained: its weights moved away from the linear probe's (= the initial ones)
    for i in range(module.num_groups):
        moved = [k for k in group_keys(module, i) if not torch.equal(run.final[k], initial[k])]
        assert bool(moved) == (i in groups_trained), f"group {i}: changed {moved}"
    # and the epoch right after the unfreeze already differs from the linear probe's
    after = run.at_epoch_start[unfreeze_epoch + 1]
    assert any(not torch.equal(after[k], lp.at_epoch_start[unfreeze_epoch + 1][k]) for k in keys)


def test_cosine_decay_anneals_over_the_step_budget():
    import math

    import torch

    from lit_transfer.strategies import CosineDecayLR
    from lit_transfer.strategies.lr import cosine_decay

    assert cosine_decay(0.0) == 1.0 and cosine_decay(1.0) == 0.0 and cosine_decay(0.5) == pytest.approx(0.5)
    assert cosine_decay(1.0, final=0.1) == pytest.approx(0.1) and cosine_decay(2.0) == 0.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = CosineDecayLR(opt)
    sched.set_total_steps(10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.2)
    assert lrs[3] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 0.3)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert CosineDecayLR.interval == "step"
