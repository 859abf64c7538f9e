"""The objective contract: loss terms and whole-step objectives are two interfaces, and binding a part to the
model never changes the model (what an objective needs of the source head it declares; the model provides it)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_module
from lit_transfer.errors import TransferConfigError
from lit_transfer.models.source_checkpoint import SourceCheckpoint
from lit_transfer.plan.weights import File
from lit_transfer.strategies import CDAN, CORAL, DANN, L2SP, MCC, MMD, Distill, LossTerm, LwF, MultiTask, Objective
from lit_transfer.strategies.objective import SourceHeadUse, training_loss

PARTS = {
    "DANN": DANN, "CDAN": CDAN, "CDAN-randomized": lambda: CDAN(randomized=True, randomized_dim=16), "MCC": MCC,
    "CORAL": CORAL, "MMD": MMD, "MultiTask": MultiTask, "LwF": LwF, "Distill": Distill, "L2SP": L2SP,
}


def save_run(path, module) -> None:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)


def model_state(model) -> dict:
    """Everything of the model a part could change: its attributes, tensors (values and requires_grad),
    submodules and train/eval modes."""
    return {
        "attributes": {k: v for k, v in vars(model).items() if not k.startswith("_")},
        "tensors": {n: (t.detach().clone(), t.requires_grad) for n, t in [*model.named_parameters(),
                                                                           *model.named_buffers()]},
        "modules": {n: (type(m), m.training) for n, m in model.named_modules()},
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert after["attributes"].keys() == before["attributes"].keys()
    for k, v in before["attributes"].items():
        assert after["attributes"][k] is v or after["attributes"][k] == v, k
    assert after["modules"] == before["modules"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for n, (t, grad) in before["tensors"].items():
        assert after["tensors"][n][1] == grad, n
        torch.testing.assert_close(after["tensors"][n][0], t, equal_nan=True, msg=n)


@pytest.mark.parametrize("name", sorted(PARTS))
def test_binding_a_part_never_changes_the_model(tmp_path, name):
    save_run(tmp_path / "source.ckpt", make_module())
    model = make_module(weights=str(tmp_path / "source.ckpt"))
    checkpoint = SourceCheckpoint.read(File(tmp_path / "source.ckpt"))
    part = PARTS[name]()
    before = model_state(model)
    part.bind(model, checkpoint)
    assert_same_state(before, model_state(model))
    assert sum(1 for _ in part.parameters()) + sum(1 for _ in part.buffers()) > 0 or name in ("MCC", "CORAL", "MMD",
                                                                                                "MultiTask")


def test_loss_terms_and_whole_step_objectives_are_two_interfaces():
    for term in (DANN, CDAN, MCC, CORAL, MMD):
        assert issubclass(term, LossTerm) and not issubclass(term, Objective)
    for whole in (MultiTask, LwF, Distill):
        assert issubclass(whole, Objective) and not issubclass(whole, LossTerm)
    model = make_module()
    x, y = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8), torch.tensor([0, 1, 2, 3])
    with pytest.raises(TransferConfigError, match="2 whole-step objectives"):
        training_loss(model, (x, y), [MultiTask(), LwF()])


def test_the_model_provides_the_source_head_an_objective_declares(tmp_path):
    model = make_module(objective=MultiTask(source_num_classes=4))
    assert model.source_head_eval and model.source_num_classes == 4
    assert all(p.requires_grad for p in model.source_head.parameters())
    save_run(tmp_path / "source.ckpt", make_module())
    frozen = make_module(weights=str(tmp_path / "source.ckpt"), objective=LwF(train_source_head=False))
    assert not frozen.source_head_eval and not any(p.requires_grad for p in frozen.source_head.parameters())
    assert LwF().source_head_use == SourceHeadUse(trainable=True, from_checkpoint=True)
    with pytest.raises(TransferConfigError, match="LwF needs model.weights = a lit_transfer checkpoint"):
        make_module(objective=LwF())
