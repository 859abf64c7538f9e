"""Validation/test metrics: accumulated over every batch of an epoch, equal to the whole split computed at once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_f1_score

from conftest import make_dm, make_module, make_trainer


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_epoch_metrics_over_uneven_batches_equal_the_whole_split(tmp_path, stage):
    dm = make_dm(eval_batch_size=7)  # uneven last batch, many batches per loader
    model = make_module()
    trainer = make_trainer(tmp_path)
    getattr(trainer, stage)(model, datamodule=dm, verbose=False)
    split = "val" if stage == "validate" else "test"
    got = trainer.callback_metrics
    model.eval()
    for domain in ("target", "source"):
        images, labels = dm.subset(domain, split)
        with torch.no_grad():
            logits = model(images)
        assert len(labels) % 7 != 0
        assert float(got[f"{domain}/{split}_loss"]) == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
        acc = float((logits.argmax(-1) == labels).float().mean())
        assert float(got[f"{domain}/{split}_acc"]) == pytest.approx(acc, abs=1e-6)
        f1 = multiclass_f1_score(logits, labels, num_classes=10, average="macro")
        assert float(got[f"{domain}/{split}_f1"]) == pytest.approx(float(f1), abs=1e-6)
    if split == "val":  # the selection metric: the trained-on (target) domain's val accuracy and loss
        assert float(got["val_acc"]) == float(got["target/val_acc"])
        assert float(got["val_loss"]) == float(got["target/val_loss"])


def test_confusion_matrix_metrics_equal_torchmetrics_with_absent_classes():
    from torchmetrics.functional.classification import multiclass_accuracy

    from lit_transfer.evaluation import ConfusionMatrix

    g = torch.Generator().manual_seed(0)
    cm = ConfusionMatrix(7)
    logits, labels = [], []
    for n in (5, 9, 1):  # uneven batches; classes 5 and 6 never occur as labels
        x, y = torch.randn(n, 7, generator=g), torch.randint(0, 5, (n,), generator=g)
        x[:, 6] = -10  # ... and class 6 is never predicted: it is left out of the macro mean
        cm.update(x, y)
        logits.append(x), labels.append(y)
    x, y = torch.cat(logits), torch.cat(labels)
    got = cm.compute()
    assert float(got["acc"]) == pytest.approx(float(multiclass_accuracy(x, y, 7, average="micro")), abs=1e-6)
    assert float(got["f1"]) == pytest.approx(float(multiclass_f1_score(x, y, 7, average="macro")), abs=1e-6)
    cm.reset()
    assert int(cm.counts.sum()) == 0 and float(cm.compute()["acc"]) == 0.0


def test_val_metrics_under_ema_weight_averaging_are_those_of_the_averaged_weights(tmp_path):
    """EMAWeightAveraging swaps every buffer of the module back before the module's epoch-end hook computes: the
    confusion counts must not be one (they read 0 there, so every val accuracy of an EMA run was 0.0)."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    dm = make_dm(eval_batch_size=7)
    model = make_module(lr=0.01)
    assert not any(b is model.metrics["target_val"].counts for b in model.buffers())
    trainer = make_trainer(tmp_path, max_epochs=10, callbacks=[EMAWeightAveraging(decay=0.9)])
    trainer.fit(model, datamodule=dm)
    got = trainer.callback_metrics  # the last validation: the averaged weights, which fit leaves in the model
    model.eval()
    for domain in ("target", "source"):
        images, labels = dm.subset(domain, "val")
        with torch.no_grad():
            acc = float((model(images).argmax(-1) == labels).float().mean())
        assert float(got[f"{domain}/val_acc"]) == pytest.approx(acc, abs=1e-6)
    assert float(got["target/val_acc"]) > 0.5  # trained on the target: far above chance (and above 0.0)
