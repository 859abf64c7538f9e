"""Cross-domain strategies over real training steps: what makes each one that strategy.

DANN (gradient reversal, Ganin schedule, no target labels), CORAL/MMD (losses against hand values),
distillation (frozen eval-mode teacher), LwF (targets from the frozen pre-fine-tuning model), multi-task
(two heads, both domains), forgetting of the source (against a hand computation), model selection.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, make_dm, make_module, make_trainer
from lit_transfer.data import DomainPairDataModule
from lit_transfer.errors import TransferConfigError
from lit_transfer.strategies import CORAL, DANN, MMD, Distill, LwF, MultiTask, coral_loss, mk_mmd
from lit_transfer.strategies.dann import DomainDiscriminator, ganin_coefficient, grad_reverse
from lit_transfer.module import load_classifier


def make_da_dm(**kwargs):
    """Unsupervised DA on disjoint halves of the digits (source: half 0; target: half 1, rotated + inverted)."""
    from conftest import SHIFT
    from lit_transfer.data import DomainSpec

    return make_dm(train_on="source", unlabeled_target=True, source=DomainSpec(half=0),
                   target=DomainSpec(half=1, shifts=SHIFT), **kwargs)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def optimizer_params(trainer) -> set[int]:
    return {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}


@torch.no_grad()
def accuracy(forward, images, labels) -> float:
    return (forward(images).argmax(-1) == labels).float().mean().item()


def first_batch(loader):
    """The first training batch; a CombinedLoader iterated outside the trainer yields (batch, idx, loader idx)."""
    batch = next(iter(loader))
    return batch[0] if isinstance(batch, tuple) and isinstance(batch[0], dict) else batch


class RecordBatches(L.Callback):
    def __init__(self):
        self.batches, self.steps = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        obj = pl_module.objective
        self.steps.append((trainer.global_step - 1, getattr(obj, "last_coeff", None), trainer.estimated_stepping_batches))


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory) -> Path:
    """A small_cnn_tiny trained a few steps on the (unshifted digits) source domain."""
    root = tmp_path_factory.mktemp("source")
    L.seed_everything(0)
    module = make_module(lr=3e-3)
    make_trainer(root, max_epochs=2, limit_train_batches=10).fit(module, make_dm(train_on="source"))
    return root / "ckpt" / "last.ckpt"


# ------------------------------------------------------------------------------------------- data streams
def test_unlabeled_stream_is_the_whole_target_train_split_without_labels():
    dm = make_dm(train_on="source", unlabeled_target=True)
    dm.setup("fit")
    assert dm.train_streams == ["source", "unlabeled"]
    loader = dm.train_dataloader()
    batch = first_batch(loader)
    assert set(batch) == {"source", "unlabeled"}
    assert isinstance(batch["unlabeled"], torch.Tensor) and batch["unlabeled"].dtype == torch.uint8
    unl = loader.iterables["unlabeled"]
    splits = dm.split_indices()["target"]
    from lit_transfer.data.splits import split_domain

    full = split_domain(dm.subset("target", "unlabeled")[1].new_tensor(__import__("sklearn.datasets").datasets
                                                                       .load_digits().target), {}, 0, 0.1, 0.2)
    # all of the target train split (1797 digits minus val and test), not only the 5 x 10 labelled shots
    assert len(unl.loader.images) == len(full["train"]) == 1797 - len(full["val"]) - len(full["test"])
    assert len(unl.loader.images) > len(splits["train"]) == 50
    assert (unl.loader.labels == -1).all(), "target labels never enter the unlabeled loader"
    images, _ = dm.subset("target", "unlabeled")
    assert torch.equal(unl.loader.images, images)


def test_single_stream_stays_a_tuple_and_joint_training_is_combined():
    dm = make_dm()
    dm.setup("fit")
    assert isinstance(next(iter(dm.train_dataloader())), (tuple, list))
    joint = make_dm(train_on="source+target")
    joint.setup("fit")
    batch = first_batch(joint.train_dataloader())
    assert set(batch) == {"source", "target"} and all(len(v) == 2 for v in batch.values())
    assert joint.num_classes == 10 and joint.val_domains == ["target", "source"]


def test_joint_training_without_an_objective_is_a_config_error(tmp_path):
    with pytest.raises(TransferConfigError, match="needs a model.objective"):
        make_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(make_module(), make_dm(train_on="source+target"))


def test_objective_missing_its_stream_is_a_config_error(tmp_path):
    with pytest.raises(TransferConfigError, match="unlabeled_target: true"):
        make_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(
            make_module(objective=DANN()), make_dm(train_on="source"))


# ------------------------------------------------------------------------------------------------- DANN
def test_gradient_reversal_flips_the_discriminator_gradient_into_the_features():
    torch.manual_seed(0)
    disc = DomainDiscriminator(16, hidden=32, norm="none")  # deterministic: no dropout between the two passes
    feats = torch.randn(8, 16, requires_grad=True)
    labels = torch.tensor([1.0] * 4 + [0.0] * 4)

    def grads(use_grl: bool, coeff: float = 0.7):
        disc.zero_grad()
        f = grad_reverse(feats, coeff) if use_grl else feats
        loss = F.binary_cross_entropy_with_logits(disc(f).squeeze(-1), labels)
        (g,) = torch.autograd.grad(loss, feats, retain_graph=True)
        loss.backward()
        return g, [p.grad.clone() for p in disc.parameters()]

    g_plain, d_plain = grads(False)
    g_grl, d_grl = grads(True)
    assert g_plain.abs().sum() > 0
    torch.testing.assert_close(g_grl, -0.7 * g_plain)
    for a, b in zip(d_plain, d_grl):  # the discriminator itself still learns to discriminate
        torch.testing.assert_close(a, b)


def test_gradient_reversal_flips_the_domain_gradient_into_the_backbone():
    torch.manual_seed(0)
    module = make_module(objective=DANN(hidden=16))
    module.eval()  # same BatchNorm behaviour for both passes
    dm = make_da_dm()
    dm.setup("fit")
    batch = first_batch(dm.train_dataloader())
    xs, xt = batch["source"][0], batch["unlabeled"]
    param = module.backbone.model.stem[0].weight

    def backbone_grad(coeff: float | None) -> torch.Tensor:
        module.zero_grad()
        fs, ft = module.embed(xs), module.embed(xt)
        if coeff is None:  # no GRL: the discriminator's own gradient
            logits = module.objective.discriminator(torch.cat([fs, ft])).squeeze(-1)
            labels = torch.cat([torch.ones(len(fs)), torch.zeros(len(ft))])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        else:
            loss, _ = module.objective.domain_loss(fs, ft, coeff)
        (g,) = torch.autograd.grad(loss, param)
        return g

    plain, reversed_ = backbone_grad(None), backbone_grad(1.0)
    assert plain.abs().sum() > 0
    torch.testing.assert_close(reversed_, -plain, rtol=1e-4, atol=1e-7)


def test_dann_trains_without_target_labels_on_ganins_schedule(tmp_path):
    L.seed_everything(0)
    module = make_module(objective=DANN(hidden=32))
    disc_before = snapshot(module.objective.discriminator)
    record = RecordBatches()
    dm = make_da_dm()
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=4, callbacks=[record], log_every_n_steps=1)
    trainer.fit(module, dm)
    # the training step never saw target labels: labelled source + images-only unlabeled target
    target_images = dm.subset("target", "unlabeled")[0].flatten(1)
    for batch in record.batches:
        assert set(batch) == {"source", "unlabeled"}
        assert isinstance(batch["unlabeled"], torch.Tensor) and batch["unlabeled"].ndim == 4
        # the unlabeled images are target images (rotated+inverted digits), not source ones
        rows = batch["unlabeled"].flatten(1)
        assert all((target_images == r).all(1).any() for r in rows[:4])
    # the GRL coefficient follows 2/(1+exp(-10p))-1 with p = global_step / estimated_stepping_batches
    total = trainer.estimated_stepping_batches
    assert total == 8 and len(record.steps) == 8
    for step, coeff, _ in record.steps:
        assert coeff == pytest.approx(2 / (1 + math.exp(-10 * step / total)) - 1)
    coeffs = [c for _, c, _ in record.steps]
    assert coeffs[0] == 0.0 and all(a < b for a, b in zip(coeffs, coeffs[1:])) and coeffs[-1] < 1
    assert ganin_coefficient(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    # the discriminator trains (optimizer's "extra" group) and is saved with the checkpoint
    assert changed(disc_before, module.objective.discriminator)
    extra = [g for g in trainer.optimizers[0].param_groups if g["name"].startswith("extra")]
    assert {id(p) for g in extra for p in g["params"]} == {id(p) for p in module.objective.discriminator.parameters()}
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("objective.discriminator.") for k in ckpt)
    assert "train/grl_coeff" in trainer.callback_metrics and "train/domain_loss" in trainer.callback_metrics


# ------------------------------------------------------------------------------------------- CORAL, MMD
def test_coral_loss_against_hand_values():
    x = torch.randn(32, 8)
    assert coral_loss(x, x).item() == 0.0
    assert coral_loss(x, x + 5.0).item() == pytest.approx(0.0, abs=1e-6)  # covariance ignores the mean
    # d = 1: unbiased variances 2 and 0 -> (2 - 0)^2 / (4 * 1^2) = 1
    assert coral_loss(torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])).item() == pytest.approx(1.0)
    # d = 2: C_s = [[2, 2], [2, 2]], C_t = 0 -> 16 / (4 * 4) = 1
    assert coral_loss(torch.tensor([[0.0, 0.0], [2.0, 2.0]]), torch.ones(2, 2)).item() == pytest.approx(1.0)


def test_mmd_against_hand_values():
    x = torch.randn(16, 4)
    assert mk_mmd(x, x).item() == pytest.approx(0.0, abs=1e-6)
    s, t = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # one kernel, sigma^2 = 1: k(s,s) = k(t,t) = 1, k(s,t) = exp(-1/2)
    assert mk_mmd(s, t, bandwidths=[1.0]).item() == pytest.approx(2 - 2 * math.exp(-0.5))
    # two kernels (sigma^2 = 1 and 4), averaged: k(s,t) = (exp(-1/2) + exp(-1/8)) / 2
    assert mk_mmd(s, t, bandwidths=[1.0, 4.0]).item() == pytest.approx(2 - (math.exp(-0.5) + math.exp(-0.125)))
    assert mk_mmd(x, x + 3.0).item() > 0.1


@pytest.mark.parametrize("objective", [CORAL(), MMD()], ids=["coral", "mmd"])
def test_alignment_objectives_train_on_source_and_unlabeled_target(tmp_path, objective):
    L.seed_everything(0)
    module = make_module(objective=objective)
    before = snapshot(module)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=3, log_every_n_steps=1)
    trainer.fit(module, make_da_dm())
    name = "train/coral_loss" if isinstance(objective, CORAL) else "train/mmd_loss"
    assert name in trainer.callback_metrics and changed(before, module)


# ----------------------------------------------------------------------------------------- distillation
@pytest.mark.parametrize("student", ["same", "smaller"])
def test_distill_teacher_is_frozen_in_eval_mode_and_unchanged(tmp_path, source_ckpt, student):
    if student == "same":
        module = make_module(weights=str(source_ckpt), objective=Distill(temperature=4.0))
    else:  # a student with another (smaller, randomly initialised) backbone than the teacher
        module = make_module(backbone="small_cnn_tiny", weights=None,
                             objective=Distill(teacher=str(source_ckpt)))
        module.objective.teacher.module.backbone  # noqa: B018 - built
    teacher = module.objective.teacher
    teacher_before = snapshot(teacher)
    student_before = snapshot(module.backbone)
    modes = []

    class Modes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append((pl_module.training, [m.training for m in teacher.modules()]))

    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=3, callbacks=[Modes()], log_every_n_steps=1)
    trainer.fit(module, make_dm(unlabeled_target=True))
    assert modes and all(student_mode and not any(t) for student_mode, t in modes)
    assert not any(m.training for m in teacher.modules())
    assert all(not p.requires_grad for p in teacher.parameters())
    assert not ({id(p) for p in teacher.parameters()} & optimizer_params(trainer))
    assert not changed(teacher_before, teacher), "the teacher's weights (and BatchNorm statistics) are unchanged"
    assert changed(student_before, module.backbone), "the student trains"
    # the teacher is the checkpoint's model: same outputs as a fresh TransferClassifier built from it
    fresh = load_classifier(str(source_ckpt)).eval()
    x = make_dm().subset("target", "test")[0][:32]
    torch.testing.assert_close(teacher(x), fresh(x))
    assert {"train/kd_loss", "train/ce_loss"} <= set(trainer.callback_metrics)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("objective.teacher.") for k in ckpt)


def test_distill_needs_a_teacher_with_the_same_label_space(source_ckpt):
    with pytest.raises(TransferConfigError, match="needs a teacher"):
        make_module(objective=Distill())
    with pytest.raises(TransferConfigError, match="same label space"):
        make_module(num_classes=5, objective=Distill(teacher=str(source_ckpt)))


# ------------------------------------------------------------------------------------------------- LwF
def test_lwf_targets_come_from_the_frozen_pre_finetuning_model(tmp_path, source_ckpt):
    L.seed_everything(0)
    module = make_module(weights=str(source_ckpt), objective=LwF(temperature=2.0))
    lwf = module.objective
    source_head_before = snapshot(module.source_head)
    backbone_before = snapshot(module.backbone)
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=3, log_every_n_steps=1)
    trainer.fit(module, make_dm())
    fresh = load_classifier(str(source_ckpt)).eval()  # the source model as it was before fine-tuning
    x = make_dm().subset("target", "test")[0][:32]
    torch.testing.assert_close(lwf.source_targets(module, x), fresh(x))
    assert not any(m.training for m in lwf.old_backbone.modules()) and not lwf.old_backbone.training
    assert all(not p.requires_grad for p in [*lwf.old_backbone.parameters(), *lwf.old_head.parameters()])
    # the live model moved away from it: backbone fine-tuned, source head trained by the LwF loss
    assert changed(backbone_before, module.backbone) and changed(source_head_before, module.source_head)
    assert {id(p) for p in module.source_head.parameters()} <= optimizer_params(trainer)
    with torch.no_grad():
        module.eval()
        assert not torch.allclose(module.source_head(module.embed(x)), fresh(x))
    assert "train/lwf_loss" in trainer.callback_metrics


def test_lwf_without_a_source_checkpoint_is_a_config_error():
    with pytest.raises(TransferConfigError, match="LwF needs model.weights"):
        make_module(objective=LwF())


# ------------------------------------------------------------------------------------------- multi-task
def test_multitask_trains_both_heads_and_reports_both_domains(tmp_path, source_ckpt):
    L.seed_everything(0)
    module = make_module(weights=str(source_ckpt), objective=MultiTask(source_weight=0.5))
    heads = snapshot(module.head), snapshot(module.source_head)
    record = RecordBatches()
    dm = make_dm(train_on="source+target")
    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=3, callbacks=[record])
    trainer.fit(module, dm)
    assert all(set(b) == {"source", "target"} for b in record.batches)
    assert changed(heads[0], module.head) and changed(heads[1], module.source_head)
    metrics = trainer.test(module, dm, verbose=False)
    merged = {k: v for d in metrics for k, v in d.items()}
    assert {"target/test_acc", "source/test_acc"} <= set(merged)
    # each domain is evaluated with its own head
    module.eval()
    src_x, src_y = dm.subset("source", "test")
    tgt_x, tgt_y = dm.subset("target", "test")
    assert merged["source/test_acc"] == pytest.approx(accuracy(lambda x: module.source_head(module.embed(x)), src_x, src_y))
    assert merged["target/test_acc"] == pytest.approx(accuracy(module, tgt_x, tgt_y))


def test_multitask_without_a_checkpoint_builds_its_source_head():
    module = make_module(num_classes=2, objective=MultiTask(source_num_classes=10))
    assert module.source_head.fc.out_features == 10 and all(p.requires_grad for p in module.source_head.parameters())
    assert module.metrics["source_test"].num_classes == 10


# ------------------------------------------------------------------------------- forgetting + selection
BASE = ["--config", str(REPO / "configs/data/digits_shift.yaml"), "--config", str(REPO / "configs/model/small_cnn.yaml"),
        "--model.backbone=small_cnn_tiny", "--trainer.max_epochs=2", "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--data.target_shots=5"]


def cli_fit(run_dir: Path, *args: str) -> dict:
    from lit_transfer.cli import main

    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    main(["fit", *BASE, f"--run.dir={run_dir}", *args])
    return json.loads((run_dir / "result.json").read_text())


@pytest.fixture(scope="module")
def cli_source(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli_source") / "run"
    cli_fit(run, "--strategy=source", "--trainer.limit_train_batches=10")
    return run / "checkpoints" / "last.ckpt"


def digits_dm() -> DomainPairDataModule:
    import yaml

    data = yaml.safe_load((REPO / "configs/data/digits_shift.yaml").read_text())["data"]
    return DomainPairDataModule(**{**data, "target_shots": 5})


@pytest.mark.parametrize("strategy", ["finetune", "lwf"])
def test_forgetting_fields_match_a_hand_computation(tmp_path, cli_source, strategy):
    result = cli_fit(tmp_path / "run", f"--strategy={strategy}", f"--model.weights={cli_source}")
    m = result["metrics"]
    src_x, src_y = digits_dm().subset("source", "test")
    before = accuracy(load_classifier(str(cli_source)).eval(), src_x, src_y)
    # after: the run's tested (best) checkpoint = trained backbone + the source head it carries
    state = torch.load(result["checkpoint"], weights_only=True)["state_dict"]
    after_model = load_classifier(str(cli_source))
    after_model.load_state_dict({k.replace("source_head.", "head."): v for k, v in state.items()
                                 if k.startswith(("backbone.", "source_head."))})
    after = accuracy(after_model.eval(), src_x, src_y)
    assert m["source/test_acc_before"] == pytest.approx(before, abs=1e-6)
    assert m["source/test_acc_after"] == pytest.approx(after, abs=1e-6)
    assert m["source/forgetting"] == pytest.approx(before - after, abs=1e-6)
    assert state["source_acc_before"].item() == pytest.approx(before, abs=1e-6)


def test_runs_without_a_source_checkpoint_have_no_forgetting_fields(tmp_path):
    result = cli_fit(tmp_path / "run", "--strategy=scratch")
    assert not any(k.startswith("source/test_acc_") or k == "source/forgetting" for k in result["metrics"])


@pytest.mark.parametrize("selection, domain", [("auto", "source"), ("oracle", "target")])
def test_da_selection_is_on_source_val_unless_oracle(tmp_path, selection, domain):
    result = cli_fit(tmp_path / "run", "--strategy=dann", f"--model.selection={selection}",
                     "--data.source.half=0", "--data.target.half=1")
    assert result["selection"] == selection and result["unlabeled_target"] is True
    assert result["train_on"] == "source"
    m = result["metrics"]
    assert m["val_acc"] == pytest.approx(m[f"{domain}/val_acc"])


def test_entropy_selection_scores_target_val_without_labels(tmp_path):
    L.seed_everything(0)
    module = make_module(selection="entropy")
    dm = make_da_dm()
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=3)
    trainer.fit(module, dm)
    out = trainer.validate(module, dm, verbose=False)
    logged = {k: v for d in out for k, v in d.items()}
    score = logged["target/val_score"]  # a score, not an accuracy: never logged as val_acc
    assert "val_acc" not in logged
    module.eval()
    with torch.no_grad():
        p = module(dm.subset("target", "val")[0]).softmax(-1)
    mean_p = p.mean(0)
    hand = -(mean_p * mean_p.log()).sum() + (p * p.clamp_min(1e-12).log()).sum(-1).mean()
    assert score == pytest.approx(hand.item(), abs=1e-5)


def test_bad_selection_is_a_config_error():
    with pytest.raises(TransferConfigError, match="model.selection must be one of"):
        make_module(selection="best")


# ------------------------------------------------------------- composable loss terms, reference recipes (issue 12)
from lit_transfer.strategies import CDAN, MCC, InverseDecayLR, mcc_loss  # noqa: E402
from lit_transfer.strategies.objective import Step, training_loss  # noqa: E402
from lit_transfer.strategies.selection import im_score, snd_score  # noqa: E402


def da_batch(n: int = 8):
    dm = make_da_dm(batch_size=n)
    dm.setup("fit")
    return dm, first_batch(dm.train_dataloader())


def test_a_two_term_loss_list_is_the_task_loss_plus_the_weighted_terms():
    torch.manual_seed(0)
    # train mode: batch statistics in the bottleneck's BatchNorm (eval mode on a fresh model gives near-zero
    # features, whose CORAL is ~0 and would hide a dropped weight)
    module = make_module(objective=[CORAL(weight=0.5), MMD(weight=2.0)], bottleneck=16).train()
    assert isinstance(module.objective, torch.nn.ModuleList) and len(module.objectives) == 2
    _, batch = da_batch()
    loss, logs, n = training_loss(module, batch, module.objective)
    xs, ys = batch["source"]
    with torch.no_grad():
        f = module.embed(torch.cat([xs, batch["unlabeled"]]))  # one forward over both streams
        fs, ft = f[: len(xs)], f[len(xs):]
        ce = F.cross_entropy(module.head(fs), ys)
    hand = ce + 0.5 * coral_loss(fs, ft) + 2.0 * mk_mmd(fs, ft)
    # both terms are measurably non-zero, so a weight of 0 (or 1) in place of 0.5 / 2.0 fails the sum below
    assert 0.5 * coral_loss(fs, ft).item() > 1e-3 and 2.0 * mk_mmd(fs, ft).item() > 1e-3
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    assert logs["cls_loss"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert logs["coral_loss"].item() == pytest.approx(coral_loss(fs, ft).item(), rel=1e-5)
    assert logs["mmd_loss"].item() == pytest.approx(mk_mmd(fs, ft).item(), rel=1e-5)
    assert n == len(xs)
    # a one-entry list and the bare term give the same loss
    single = make_module(objective=[CORAL(weight=0.5)], bottleneck=16).eval()
    single.load_state_dict(module.state_dict(), strict=False)
    bare = training_loss(single, batch, CORAL(weight=0.5))[0]
    assert training_loss(single, batch, single.objective)[0].item() == pytest.approx(bare.item())


@pytest.mark.parametrize("term", [DANN, CDAN, MCC, CORAL, MMD], ids=lambda t: t.__name__)
def test_each_terms_weight_scales_its_contribution_to_the_loss(term):
    """loss = CE + weight × term, with a term value far from 0: a weight silently dropped (or forced to 0 or 1)
    fails here, not only a term that crashes."""
    torch.manual_seed(0)
    # train mode: BatchNorm normalises with the batch's statistics (a fresh model in eval mode has near-zero
    # bottleneck features, whose CORAL is ~1e-15); no dropout in the discriminators, so it is deterministic
    kwargs = {"hidden": 16, "norm": "none"} if term in (DANN, CDAN) else {}
    module = make_module(objective=[term(weight=0.7, **kwargs)], bottleneck=16).train()
    _, batch = da_batch()
    loss, logs, _ = training_loss(module, batch, module.objective)
    value, ce = logs[module.objectives[0].log_name].item(), logs["cls_loss"].item()
    assert abs(value) > 1e-3, "the term must be measurably non-zero on this batch for the check to mean anything"
    assert loss.item() == pytest.approx(ce + 0.7 * value, rel=1e-5)
    assert abs(loss.item() - ce) > 0.5 * abs(0.7 * value)  # the term's share is in the loss
    # the same weights with the weight set to 0 and to 2: only the term's share changes, linearly
    for w in (0.0, 2.0):
        other = make_module(objective=[term(weight=w, **kwargs)], bottleneck=16).train()
        other.load_state_dict(module.state_dict())
        assert training_loss(other, batch, other.objective)[0].item() == pytest.approx(ce + w * value, rel=1e-5)


def test_step_computes_each_streams_features_once():
    module = make_module(objective=[MCC()]).eval()
    _, batch = da_batch()
    calls = []
    module.backbone.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    step = Step(module, batch)
    step.logits("unlabeled"), step.features("source"), step.logits("source"), step.task_loss()
    assert calls == [len(batch["source"][0]) + len(batch["unlabeled"])]


def test_a_missing_stream_is_a_one_line_config_error_naming_the_setting(tmp_path):
    with pytest.raises(TransferConfigError) as err:
        make_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(
            make_module(objective=[DANN(hidden=8), MCC()]), make_dm(train_on="source"))
    msg = str(err.value)
    assert "\n" not in msg and "DANN needs the unlabeled training stream" in msg and "unlabeled_target: true" in msg


def test_annealed_lr_follows_mu0_over_1_plus_alpha_p_to_the_beta():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.01, momentum=0.9)
    sched = InverseDecayLR(opt, rate=10.0, power=0.75, total_steps=100)
    lrs = {}
    for step in range(101):
        lrs[step] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[50] == pytest.approx(0.01 / 6 ** 0.75)  # p = 0.5: 1 + 10 * 0.5 = 6
    assert lrs[100] == pytest.approx(0.01 / 11 ** 0.75)  # p = 1
    assert lrs[25] == pytest.approx(0.01 * 3.5 ** -0.75)


def test_annealed_lr_is_stepped_every_optimizer_step_over_the_whole_fit(tmp_path):
    from functools import partial

    L.seed_everything(0)
    module = make_module(lr=0.01, optimizer=partial(torch.optim.SGD, momentum=0.9),
                         lr_scheduler=partial(InverseDecayLR, rate=10.0, power=0.75))
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))

    trainer = make_trainer(tmp_path, max_epochs=2, limit_train_batches=4, callbacks=[Record()])
    trainer.fit(module, make_dm(train_on="source"))
    total = trainer.estimated_stepping_batches
    assert total == 8 and len(seen) == 8
    for step, lr in seen:
        assert lr == pytest.approx(0.01 * (1 + 10 * step / total) ** -0.75)


def test_bottleneck_and_discriminator_shapes():
    module = make_module(bottleneck=256, objective=[DANN(hidden=1024, norm="batch"), CDAN(hidden=64)])
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    assert module.feature_dim == 256 and module.embed(x).shape == (4, 256)
    assert module.head.fc.in_features == 256 and module(x).shape == (4, 10)
    linears = [m for m in module.objectives[0].discriminator if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 1024), (1024, 1024), (1024, 1)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in module.objectives[0].discriminator) == 2
    drop = DomainDiscriminator(256, 1024, norm="dropout")
    assert [m.p for m in drop if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in drop)
    # CDAN conditions on features ⊗ predictions: 256 x 10 inputs
    assert module.objectives[1].discriminator[0].in_features == 256 * 10
    # the bottleneck trains at the head's lr (the "extra" group) and is counted in the parameters
    names = {n for n, _ in module.named_parameters() if n.startswith("bottleneck.")}
    assert names and module.param_counts()["total"] == sum(
        p.numel() for n, p in module.named_parameters() if n.startswith(("backbone.", "head.", "bottleneck.")))
    with pytest.raises(TransferConfigError, match="norm must be one of"):
        DANN(norm="layer")


def test_mcc_against_hand_values():
    k = 4
    # confident, one class per example: no confusion between classes
    assert mcc_loss(torch.eye(k) * 100.0, temperature=1.0).item() == pytest.approx(0.0, abs=1e-6)
    # uniform predictions: every row of the confusion matrix is uniform -> (K - 1) / K
    assert mcc_loss(torch.zeros(6, k)).item() == pytest.approx((k - 1) / k, abs=1e-6)
    # hand computation for two examples, T = 1
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    p = z.softmax(1)
    h = -(p * p.log()).sum(1)
    w = 1 + torch.exp(-h)
    w = 2 * w / w.sum()
    c = (p * w[:, None]).T @ p
    c = c / c.sum(1, keepdim=True)
    assert mcc_loss(z, temperature=1.0).item() == pytest.approx(((c.sum() - c.trace()) / 2).item(), rel=1e-5)


def test_cdan_with_entropy_conditioning_and_mcc_train_together(tmp_path):
    L.seed_everything(0)
    module = make_module(bottleneck=32, objective=[CDAN(hidden=32), MCC(weight=0.5)])
    disc_before = snapshot(module.objectives[0].discriminator)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=3, log_every_n_steps=1)
    trainer.fit(module, make_da_dm())
    m = trainer.callback_metrics
    assert {"train/cls_loss", "train/cdan_loss", "train/mcc_loss", "train/domain_acc"} <= set(m)
    assert changed(disc_before, module.objectives[0].discriminator)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("objective.0.discriminator.") for k in ckpt) and any(k.startswith("bottleneck.") for k in ckpt)


def test_label_free_scores_against_hand_values():
    k = 4
    confident = torch.eye(k).repeat(3, 1)  # 3 examples per class, one-hot, all classes used
    assert im_score(confident).item() == pytest.approx(math.log(k), abs=1e-5)
    assert im_score(torch.full((8, k), 1 / k)).item() == pytest.approx(0.0, abs=1e-6)
    # SND: each example has 2 identical neighbours out of 11 others -> entropy ≈ log 2 (others ~exp(-20) away)
    assert snd_score(confident).item() == pytest.approx(math.log(2), abs=1e-3)
    # all examples the same prediction: uniform over the 11 others -> log 11 (a collapsed model scores high)
    assert snd_score(torch.eye(k)[[0] * 12]).item() == pytest.approx(math.log(11), abs=1e-4)


def fit_and_validate_da(tmp_path, selection: str, epochs: int):
    """A DANN run selected by ``selection``; the model (eval mode), its data and what validation logged."""
    L.seed_everything(0)
    module = make_module(selection=selection, objective=[DANN(hidden=8)])
    dm = make_da_dm()
    trainer = make_trainer(tmp_path, max_epochs=epochs, limit_train_batches=2)
    trainer.fit(module, dm)
    out = {k: v for d in trainer.validate(module, dm, verbose=False) for k, v in d.items()}
    return module.eval(), dm, out


def test_da_runs_log_label_free_scores_and_snd_can_select(tmp_path):
    module, dm, out = fit_and_validate_da(tmp_path, "snd", epochs=1)
    with torch.no_grad():
        p = module(dm.subset("target", "val")[0]).softmax(-1)
    assert out["target/val_score"] == pytest.approx(snd_score(p).item(), abs=1e-5) == pytest.approx(out["target/val_snd"])
    assert out["target/val_im_score"] == pytest.approx(im_score(p).item(), abs=1e-5)


def test_dev_selects_on_the_importance_weighted_source_val_risk(tmp_path):
    from lit_transfer.strategies.selection import density_ratio, dev_risk

    module, dm, out = fit_and_validate_da(tmp_path, "dev", epochs=2)
    with torch.no_grad():  # by hand: features and source losses of the val images, no target label
        (xs, ys), (xt, _) = dm.subset("source", "val"), dm.subset("target", "val")
        fs, ft = module.embed(xs), module.embed(xt)
        loss = torch.nn.functional.cross_entropy(module.head(fs), ys, reduction="none")
    risk = dev_risk(loss, density_ratio(fs, ft)).item()
    assert out["target/val_dev_risk"] == pytest.approx(risk, rel=1e-4)
    assert out["target/val_score"] == pytest.approx(-risk, rel=1e-4) and out["val_loss"] == pytest.approx(risk, rel=1e-4)
    # prediction changes between validations are logged (label-free convergence), in [0, 1]
    assert 0.0 <= out["target/val_pred_change"] <= 1.0


def test_source_stage_runs_skip_the_dev_classifier(tmp_path):
    """A plain source-trained run (auto selection, no unlabeled target) gets the cheap scores, not DEV's fits."""
    L.seed_everything(0)
    module, dm = make_module(), make_dm(train_on="source")
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    trainer.fit(module, dm)
    out = {k: v for d in trainer.validate(module, dm, verbose=False) for k, v in d.items()}
    assert "target/val_im_score" in out and "target/val_dev_risk" not in out


def test_dev_selection_needs_source_val_data(tmp_path):
    from lit_transfer.evaluation import check_selection

    class TargetOnly:
        val_domains = ["target"]

    with pytest.raises(TransferConfigError, match="selection=dev needs.*source") as err:
        check_selection(make_module(selection="dev"), TargetOnly())
    assert "\n" not in str(err.value)


def test_report_shows_the_selection_of_each_row():
    from lit_transfer.report import markdown, summarise

    def result(strategy, seed, acc, selection):
        return {"experiment": "digits_to_digits_m", "strategy": strategy, "seed": seed, "target_shots": None,
                "train_on": "source", "selection": selection, "split_hash": "h",
                "metrics": {"target/test_acc": acc}}

    rs = [result("source_only", s, 0.4, "entropy") for s in range(3)]
    rs += [result("dann", s, 0.5 + 0.01 * s, "entropy") for s in range(3)]
    rs += [result("dann", s, 0.3, "auto") for s in range(3)]
    summary = summarise(rs, baseline="source_only")
    rows = {(r["strategy"], r["selection"]): r for r in summary["rows"]}
    assert set(rows) == {("source_only", "entropy"), ("dann", "entropy"), ("dann", "source val")}
    assert rows["dann", "entropy"]["gain_mean"] == pytest.approx(0.11)
    assert rows["dann", "source val"]["pairs"] == 3  # paired with the baseline's only selection
    text = markdown(summary)
    assert "| strategy | selection |" in text.splitlines()[0]
    assert "| dann | source val |" in text and "| dann | entropy |" in text


def test_da_on_twins_of_the_source_images_is_a_config_error(tmp_path):
    """digits_shift's target is the rotated+inverted twin of every source image: DA needs disjoint halves."""
    from lit_transfer.data import DomainSpec

    with pytest.raises(TransferConfigError, match="same images.*half: 0") as err:
        make_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(
            make_module(objective=[MCC()]), make_dm(train_on="source", unlabeled_target=True))
    assert "\n" not in str(err.value)
    dm = make_dm(train_on="source", unlabeled_target=True, source=DomainSpec(half=0),
                 target=DomainSpec(half=1, shifts=[{"name": "invert"}]))
    L.seed_everything(0)
    make_trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(make_module(objective=[MCC()]), dm)
    from lit_transfer.data.domains import load_domain

    src, tgt = load_domain(dm.source, 0), load_domain(dm.target, 0)
    unlabeled = dm.subset("target", "unlabeled")[0]
    assert len(unlabeled) == len(dm.split_indices()["target"]["train"]) or len(unlabeled) > 50
    # no source training image has a twin among the target's images (the unlabeled stream included)
    assert set(src.origin[dm.split_indices()["source"]["train"]].tolist()).isdisjoint(tgt.origin.tolist())


def test_selection_against_the_oracle_table(tmp_path):
    from lit_transfer.strategies.selection import compare_with_oracle

    run = tmp_path / "trial" / "logs"
    run.mkdir(parents=True)
    (tmp_path / "trial" / "result.json").write_text(json.dumps({"strategy": "dann"}))
    # epoch 0: collapsed (high SND), epoch 1: best IM and oracle, epoch 2: best source val and lowest DEV risk, last
    (run / "metrics.csv").write_text(
        "epoch,target/val_acc,target/val_im_score,target/val_snd,target/val_dev_risk,source/val_acc\n"
        "0,0.1,0.0,2.4,2.0,0.2\n0,,,,,\n1,0.6,1.5,1.9,0.9,0.9\n2,0.5,1.2,2.0,0.7,0.95\n")
    lines = compare_with_oracle(str(tmp_path)).splitlines()
    assert lines[0].startswith("| strategy | runs | entropy (IM) | snd | dev | source val acc | last epoch | oracle |")
    assert lines[2] == "| dann | 1 | 60.0 | 10.0 | 50.0 | 50.0 | 50.0 | 60.0 |"
    # a run logged before DEV existed: its column is a dash, not a crash
    (run / "metrics.csv").write_text("epoch,target/val_acc,target/val_im_score,target/val_snd,source/val_acc\n"
                                     "0,0.1,0.0,2.4,0.2\n1,0.6,1.5,1.9,0.9\n")
    assert compare_with_oracle(str(tmp_path)).splitlines()[2] == "| dann | 1 | 60.0 | 10.0 | – | 60.0 | 60.0 | 60.0 |"


def test_digits_m_sweep_trains_the_da_recipe_not_the_model_configs_defaults(capsys, tmp_path):
    """Explicit configs win over --strategy: the sweep's own --model.lr and the strategy's SGD must reach DANN."""
    import yaml as _yaml

    from lit_transfer.cli import main as cli_main
    from lit_transfer.sweep import build_command, load_sweep

    cfg = load_sweep(REPO / "sweeps" / "digits_m_da.yaml")
    cmd = build_command(cfg, {"strategy": "dann", "seed_everything": 0}, tmp_path / "trial")
    args = cmd[cmd.index("fit"):-2]  # without --run.dir
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli_main([*args, "--print_config"])
    printed = _yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lr"] == 0.01
    assert printed["model"]["optimizer"]["class_path"] == "torch.optim.SGD"
    assert printed["run"]["strategy"] == "dann"
    # every row of the table gets the same budget and the same weight averaging (source_only included)
    assert printed["trainer"]["max_epochs"] == 240
    ema = [cb for cb in printed["trainer"]["callbacks"] if cb["class_path"].endswith("EMAWeightAveraging")]
    assert len(ema) == 1 and ema[0]["init_args"]["decay"] == 0.995
