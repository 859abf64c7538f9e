"""Real on-disk formats, written tiny by the tests and read through the real loaders with download=False.

The tiny files are not the official releases, so CIFAR, SVHN and STL-10 specs opt out of torchvision's md5 check
(``check_md5=False``: the files only have to exist); the check itself is on by default (see the last tests)."""

import bz2
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from lit_transfer.data import DomainPairDataModule, DomainSpec
from lit_transfer.data.domains import load_domain


def pattern(n, c, h, w, offset=0):
    """Asymmetric uint8 images: any transposed or flipped layout would not match."""
    n_, c_, h_, w_ = np.meshgrid(*(np.arange(k) for k in (n, c, h, w)), indexing="ij")
    return ((n_ * 7 + c_ * 31 + h_ * 3 + w_ + offset) % 256).astype(np.uint8)


def labels_for(n, classes=10):
    return np.arange(n) % classes


def check(spec, train_x, train_y, test_x, test_y):
    domain = load_domain(spec, split_seed=0)
    assert domain.images.dtype == torch.uint8 and domain.labels.dtype == torch.int64
    assert torch.equal(domain.images, torch.from_numpy(np.concatenate([train_x, test_x])))
    assert torch.equal(domain.labels, torch.from_numpy(np.concatenate([train_y, test_y])).long())
    assert torch.equal(domain.official["test"], torch.arange(len(train_y), len(train_y) + len(test_y)))


# --- writers for each format --------------------------------------------------------------------------------


def write_idx(path, array):
    magic = 0x800 + array.ndim  # ubyte data, ndim dimensions, big-endian sizes
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    data = {"train": (pattern(20, 1, 28, 28), labels_for(20)), "t10k": (pattern(10, 1, 28, 28, 5), labels_for(10))}
    for prefix, (x, y) in data.items():
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))
    check(DomainSpec(name=name, root=str(tmp_path), download=False), *data["train"], *data["t10k"])


def write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_x, train_y = pattern(50, 3, 32, 32), labels_for(50)
    for b in range(5):
        part = slice(b * 10, (b + 1) * 10)
        write_pickle(folder / f"data_batch_{b + 1}",
                     {"data": train_x[part].reshape(10, -1), "labels": train_y[part].tolist()})
    test_x, test_y = pattern(10, 3, 32, 32, 9), labels_for(10)
    write_pickle(folder / "test_batch", {"data": test_x.reshape(10, -1), "labels": test_y.tolist()})
    write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    spec = DomainSpec(name="cifar10", root=str(tmp_path), download=False, check_md5=False)
    check(spec, train_x, train_y, test_x, test_y)

    # label_map keeps classes 3 and 5 only, renumbered 0 and 1, through the whole module
    dm = DomainPairDataModule(source=spec, target=DomainSpec(name="cifar10", root=str(tmp_path), download=False, check_md5=False,
                                                             label_map={3: 0, 5: 1}))
    assert dm.num_classes == 2 and dm.in_chans == 3 and dm.val_domains == ["target"]
    images, labels = next(iter(dm.test_dataloader()[0]))
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]
    assert torch.equal(images, torch.from_numpy(test_x[[3, 5]]))
    assert set(dm.subset("target", "train")[1].tolist()) == {0, 1}


def test_cifar100_python_files(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train_x, train_y = pattern(200, 3, 32, 32), labels_for(200, 100)
    test_x, test_y = pattern(100, 3, 32, 32, 1), labels_for(100, 100)
    write_pickle(folder / "train", {"data": train_x.reshape(200, -1), "fine_labels": train_y.tolist()})
    write_pickle(folder / "test", {"data": test_x.reshape(100, -1), "fine_labels": test_y.tolist()})
    write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    spec = DomainSpec(name="cifar100", root=str(tmp_path), download=False, check_md5=False)
    check(spec, train_x, train_y, test_x, test_y)
    dm = DomainPairDataModule(source=spec, target=spec)
    assert dm.num_classes == 100 and dm.val_domains == ["target", "source"]


def test_svhn_mat_files(tmp_path):
    data = {"train": (pattern(20, 3, 32, 32), labels_for(20)), "test": (pattern(10, 3, 32, 32, 2), labels_for(10))}
    for split, (x, y) in data.items():
        # SVHN stores X as [H, W, C, N] and the digit 0 as label 10
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat",
                         {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y)[:, None].astype(np.uint8)})
    check(DomainSpec(name="svhn", root=str(tmp_path), download=False, check_md5=False), *data["train"], *data["test"])


def test_usps_bz2_libsvm_files(tmp_path):
    data = {"usps.bz2": (pattern(20, 1, 16, 16) % 2 * 255, labels_for(20)),
            "usps.t.bz2": (pattern(10, 1, 16, 16, 1) % 2 * 255, labels_for(10))}
    for filename, (x, y) in data.items():
        values = x.reshape(len(x), -1).astype(np.float32) / 255 * 2 - 1  # stored in [-1, 1], labels 1..10
        lines = [f"{label + 1} " + " ".join(f"{j + 1}:{v:.6f}" for j, v in enumerate(row))
                 for label, row in zip(y, values)]
        (tmp_path / filename).write_bytes(bz2.compress("\n".join(lines).encode() + b"\n"))
    spec = DomainSpec(name="usps", root=str(tmp_path), download=False)
    check(spec, *data["usps.bz2"], *data["usps.t.bz2"])


def test_stl10_binary_files(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    data = {"train": (pattern(10, 3, 96, 96), labels_for(10)), "test": (pattern(10, 3, 96, 96, 4), labels_for(10))}
    for split, (x, y) in data.items():
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # stored column-major
        (folder / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())  # 1-based
    spec = DomainSpec(name="stl10", root=str(tmp_path), download=False, check_md5=False)
    check(spec, *data["train"], *data["test"])
    small = load_domain(DomainSpec(name="stl10", root=str(tmp_path), download=False, check_md5=False, image_size=32, channels=1), 0)
    assert small.images.shape == (20, 1, 32, 32)


def write_pngs(root, classes, per_class, size=(10, 12), mode="RGB"):
    arrays = {}
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = pattern(1, 3, *size, offset=c * 50 + i)[0].transpose(1, 2, 0)
            image = Image.fromarray(array).convert(mode)
            image.save(root / name / f"{i}.png")
            arrays[name, i] = np.array(image)
    return arrays


def test_image_folder_without_split_folders(tmp_path):
    arrays = write_pngs(tmp_path, ["cat", "dog", "eel"], per_class=10)
    spec = DomainSpec(name="image_folder", root=str(tmp_path), download=False)
    dm = DomainPairDataModule(source=spec, target=spec, val_fraction=0.2, test_fraction=0.2)
    assert (dm.num_classes, dm.in_chans) == (3, 3) and not dm._subsets
    domain = load_domain(spec, 0)
    assert domain.images.shape == (30, 3, 10, 12) and domain.official == {}
    assert torch.equal(domain.images[10], torch.from_numpy(arrays["dog", 0]).permute(2, 0, 1))
    assert domain.labels.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    sizes = {s: len(v) for s, v in dm.split_indices()["target"].items()}
    assert sizes == {"train": 18, "val": 6, "test": 6}


def test_image_folder_with_split_folders_and_grayscale_resize(tmp_path):
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        write_pngs(tmp_path / split, ["a", "b"], per_class=n, mode="L")
    spec = DomainSpec(name="image_folder", root=str(tmp_path), download=False, image_size=8)
    dm = DomainPairDataModule(source=spec, target=spec, target_shots=2)
    assert (dm.num_classes, dm.in_chans) == (2, 1)
    splits = dm.split_indices()["target"]
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 4, 6]  # official val/test, 2 shots × 2
    images, labels = dm.subset("target", "test")
    assert images.shape == (6, 1, 8, 8) and labels.tolist() == [0, 0, 0, 1, 1, 1]


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "usps", "svhn", "cifar10", "cifar100", "stl10"])
def test_missing_files_without_download(tmp_path, name):
    dm = DomainPairDataModule(target=DomainSpec(name=name, root=str(tmp_path), download=False, check_md5=False))
    with pytest.raises(ValueError, match=rf"Dataset '{name}' not found under {tmp_path} \(download: false\); "
                                         "set download: true or point root at the data") as err:
        dm.setup("fit")
    assert "\n" not in str(err.value)


def test_image_folder_missing_or_empty(tmp_path):
    missing = DomainSpec(name="image_folder", root=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"image_folder root .*nope does not exist; expected root/<class>/\*\.png"):
        DomainPairDataModule(target=missing).num_classes
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    empty = DomainSpec(name="image_folder", root=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="has no class folders with images"):
        DomainPairDataModule(target=empty).setup("fit")


def test_image_folder_mixed_sizes_need_image_size(tmp_path):
    write_pngs(tmp_path / "train", ["a"], per_class=1, size=(8, 8))
    write_pngs(tmp_path / "x", ["b"], per_class=1, size=(9, 9))
    (tmp_path / "x" / "b").rename(tmp_path / "train" / "b")
    with pytest.raises(ValueError, match="different sizes .* set image_size"):
        load_domain(DomainSpec(name="image_folder", root=str(tmp_path)), 0)
    resized = load_domain(DomainSpec(name="image_folder", root=str(tmp_path), image_size=6), 0)
    assert resized.images.shape == (2, 3, 6, 6)


@pytest.mark.parametrize("name", ["cifar10", "svhn", "stl10"])
def test_torchvision_md5_check_is_on_by_default(tmp_path, name):
    from test_real_data_configs import WRITERS

    WRITERS[name](tmp_path)  # the right files, not the official bytes
    spec = DomainSpec(name=name, root=str(tmp_path), download=False)
    with pytest.raises(ValueError, match=r"not found under .*md5 check: check_md5: false") as err:
        load_domain(spec, 0)
    assert "\n" not in str(err.value)
    assert len(load_domain(DomainSpec(name=name, root=str(tmp_path), download=False, check_md5=False), 0).labels)
