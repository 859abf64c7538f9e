import time

import torch

from lit_transfer.callbacks.throughput import Throughput, _batch_images


class _Trainer:
    sanity_checking = False


def test_images_per_second_count_training_batches_and_leave_validation_out(monkeypatch):
    clock = iter([0.0, 1.0, 5.0, 9.0])  # train start, val start, val end, train end
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    cb, trainer = Throughput(), _Trainer()
    cb.on_train_start(trainer, None)
    for batch in [(torch.zeros(16, 1, 8, 8), torch.zeros(16)), {"target": (torch.zeros(4, 1), torch.zeros(4)),
                                                                 "unlabeled": torch.zeros(6, 1)}]:
        cb.on_train_batch_end(trainer, None, None, batch, 0)
    cb.on_validation_start(trainer, None)
    cb.on_validation_end(trainer, None)
    cb.on_train_end(trainer, None)
    assert cb.images == 26
    assert cb.summary() == {"train_images_per_s": 5.2, "train_time_s": 5.0}  # 26 images in 9 - 4 s


def test_no_training_no_throughput():
    assert Throughput().summary() == {}
    assert _batch_images((torch.zeros(3, 2), torch.zeros(3))) == 3
