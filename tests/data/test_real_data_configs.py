"""Every shipped real-data config loads through its real dataset loaders, on tiny fake on-disk data.

Each test writes the dataset files in their real formats under ``tmp_path`` (as ``test_data_formats.py``
does), parses the shipped YAML, points ``root`` at ``tmp_path`` with ``download: false``, and builds the
data module: ``setup()`` and one batch from each loader, with the shapes and label spaces the config promises.
"""

from __future__ import annotations

import bz2
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
import yaml
from PIL import Image

from conftest import REPO
from lit_transfer.data import DomainPairDataModule

DATA_CONFIGS = sorted(p.stem for p in (REPO / "configs" / "data").glob("*.yaml"))


def pattern(n, c, h, w, offset=0):
    n_, c_, h_, w_ = np.meshgrid(*(np.arange(k) for k in (n, c, h, w)), indexing="ij")
    return ((n_ * 7 + c_ * 31 + h_ * 3 + w_ + offset) % 256).astype(np.uint8)


def labels_for(n, classes=10):
    return np.arange(n) % classes


# --- writers, one per format ----------------------------------------------------------------------------------
def write_mnist(root, n_train=40, n_test=20):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, off in (("train", n_train, 0), ("t10k", n_test, 5)):
        x, y = pattern(n, 1, 28, 28, off)[:, 0], labels_for(n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + y.tobytes())


def write_usps(root, n_train=40, n_test=20):
    for filename, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
        values = pattern(n, 1, 16, 16).reshape(n, -1).astype(np.float32) / 255 * 2 - 1
        lines = [f"{label + 1} " + " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(row))
                 for label, row in zip(labels_for(n), values)]
        (root / filename).write_bytes(bz2.compress("\n".join(lines).encode() + b"\n"))


def write_svhn(root, n_train=40, n_test=20):
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = pattern(n, 3, 32, 32), labels_for(n)
        scipy.io.savemat(root / f"{split}_32x32.mat",
                         {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y)[:, None].astype(np.uint8)})


def write_cifar10(root, n_train=50, n_test=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    x, y = pattern(n_train, 3, 32, 32), labels_for(n_train)
    per = n_train // 5
    for b in range(5):
        part = slice(b * per, (b + 1) * per)
        (folder / f"data_batch_{b + 1}").write_bytes(
            pickle.dumps({"data": x[part].reshape(per, -1), "labels": y[part].tolist()}))
    tx, ty = pattern(n_test, 3, 32, 32, 9), labels_for(n_test)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": tx.reshape(n_test, -1), "labels": ty.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def write_cifar100(root, n_train=300, n_test=200):
    folder = root / "cifar-100-python"
    folder.mkdir()
    for name, n, off in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = pattern(n, 3, 32, 32, off), labels_for(n, 100)
        (folder / name).write_bytes(pickle.dumps({"data": x.reshape(n, -1), "fine_labels": y.tolist()}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))


def write_stl10(root, n_train=40, n_test=20):
    folder = root / "stl10_binary"
    folder.mkdir()
    for split, n, off in (("train", n_train, 0), ("test", n_test, 4)):
        x, y = pattern(n, 3, 96, 96, off), labels_for(n)
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # column-major
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # 1-based


def write_image_folder(root, classes=("cat", "dog", "eel"), per_class=8, size=(20, 24)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = pattern(1, 3, *size, offset=c * 50 + i)[0].transpose(1, 2, 0)
            Image.fromarray(array).save(root / name / f"{i}.png")


WRITERS = {"mnist": write_mnist, "usps": write_usps, "svhn": write_svhn, "cifar10": write_cifar10,
           "cifar100": write_cifar100, "stl10": write_stl10}


def load_config(name: str, tmp_path) -> dict:
    """The shipped config's ``data`` section, with each domain's files written under tmp_path."""
    data = yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())["data"]
    for role in ("source", "target"):
        spec = dict(data[role])
        root = tmp_path / role
        root.mkdir()
        if spec["name"] == "image_folder":
            write_image_folder(root)
        else:
            WRITERS[spec["name"]](root)
        # check_md5: the fake files are not the official releases torchvision's md5 check expects
        data[role] = {**spec, "root": str(root), "download": False, "check_md5": False}
    if data.get("target_shots"):
        data["target_shots"] = 1  # the fake datasets hold a handful of images per class
    return data


def one_batch(dm: DomainPairDataModule):
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    tests = [next(iter(loader)) for loader in dm.test_dataloader()]
    return train, tests


# --- the configs --------------------------------------------------------------------------------------------
def test_every_data_config_is_covered():
    assert set(DATA_CONFIGS) >= {"digits_shift", "mnist_to_usps", "svhn_to_mnist", "cifar10_to_cifar100",
                                 "cifar10_to_stl10", "image_folder"}


def test_mnist_to_usps(tmp_path):
    dm = DomainPairDataModule(**load_config("mnist_to_usps", tmp_path))
    (x, y), tests = one_batch(dm)
    assert (dm.num_classes, dm.in_chans) == (10, 1) and dm.val_domains == ["target", "source"]
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)  # USPS 16 px resized to MNIST's 28
    assert [t[0].shape[1:] for t in tests] == [(1, 28, 28), (1, 28, 28)]
    assert set(y.tolist()) <= set(range(10))


def test_svhn_to_mnist(tmp_path):
    dm = DomainPairDataModule(**load_config("svhn_to_mnist", tmp_path))
    (x, y), tests = one_batch(dm)
    assert (dm.num_classes, dm.in_chans) == (10, 3) and dm.val_domains == ["target", "source"]
    assert x.shape[1:] == (3, 32, 32) and [t[0].shape[1:] for t in tests] == [(3, 32, 32)] * 2
    # MNIST made RGB: three equal channels
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_cifar10_to_cifar100(tmp_path):
    dm = DomainPairDataModule(**load_config("cifar10_to_cifar100", tmp_path))
    (x, y), tests = one_batch(dm)
    assert (dm.num_classes, dm.source_num_classes, dm.in_chans) == (100, 10, 3)
    assert dm.val_domains == ["target"]  # the 100-class head cannot score the 10-class source
    assert x.shape[1:] == (3, 32, 32) and int(y.max()) < 100


def test_cifar10_to_stl10_maps_the_nine_shared_classes(tmp_path):
    data = load_config("cifar10_to_stl10", tmp_path)
    dm = DomainPairDataModule(**data)
    (x, y), tests = one_batch(dm)
    assert (dm.num_classes, dm.in_chans) == (9, 3) and dm.val_domains == ["target", "source"]
    assert x.shape[1:] == (3, 32, 32)  # STL-10's 96 px resized to CIFAR's 32
    for role, dropped in (("source", 6), ("target", 7)):  # CIFAR frog, STL monkey
        original = torch.from_numpy(labels_for(60 if role == "target" else 70))
        for split in ("train", "val", "test"):
            idx = dm.split_indices()[role][split]
            assert dropped not in set(original[idx].tolist())
            assert set(dm.subset(role, split)[1].tolist()) <= set(range(9))
    names_cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    names_stl = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    same = {"automobile": "car"}
    for c, new in data["source"]["label_map"].items():
        match = [s for s, n in data["target"]["label_map"].items() if n == new]
        assert len(match) == 1 and same.get(names_cifar[c], names_cifar[c]) == names_stl[match[0]]


def test_image_folder_template(tmp_path):
    dm = DomainPairDataModule(**load_config("image_folder", tmp_path))
    (x, y), tests = one_batch(dm)
    assert (dm.num_classes, dm.in_chans) == (3, 3)
    assert x.shape[1:] == (3, 224, 224) and set(y.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("name", ["mnist_to_usps", "svhn_to_mnist", "cifar10_to_stl10"])
def test_da_pairs_serve_an_unlabeled_target_stream(tmp_path, name):
    dm = DomainPairDataModule(**{**load_config(name, tmp_path), "train_on": "source", "unlabeled_target": True})
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))[0]  # CombinedLoader outside the trainer: (batch, idx, loader idx)
    assert set(batch) == {"source", "unlabeled"}
    assert batch["source"][0].shape[1:] == batch["unlabeled"].shape[1:]  # one forward for both streams


@pytest.mark.parametrize("name,source,target", [("uci_digits_to_mnist5k", (1797, 1), (5000, 1)),
                                                 ("mnist5k_to_uci_digits", (5000, 1), (1797, 1)),
                                                 ("mnist5k_to_mnist5k_m", (2500, 3), (2500, 3))])
def test_shipped_real_da_pairs_load_offline_at_28_px(name, source, target):
    """Unsupervised DA: every target train image comes as an unlabeled stream (tests/data/test_mnist_m.py: the
    source and target images are disjoint); built directly, split_seed: null is 0 (the CLI: the run's seed)."""
    data = yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())["data"]
    assert data["split_seed"] is None and "target_shots" not in data
    dm = DomainPairDataModule(**data, train_on="source", unlabeled_target=True)
    dm.setup("fit")
    for role, (n, chans) in (("source", source), ("target", target)):
        total = sum(len(dm.split_indices()[role][s]) for s in ("val", "test")) + len(dm.subset(role, "train")[1])
        assert dm.subset(role, "train")[0].shape[1:] == (chans, 28, 28)
        assert total == n
    assert len(dm.subset("target", "unlabeled")[0]) == len(dm.subset("target", "train")[0])  # all of it
    assert dm.labelled_counts()["target_train"] == 0
    assert dm.val_domains == ["source", "target"]  # trained on the source; the same 10 labels and channels
