"""Domain shifts: deterministic transforms of a whole domain, uint8 ``[N, C, H, W]`` in and out.

A shift turns one dataset into a controlled target domain (digits → rotated, inverted digits). Random
parameters are drawn per sample from a generator seeded by the split seed and the domain, so every
strategy and every training seed sees exactly the same shifted images.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from .common import Registry, generator
from lit_transfer.errors import TransferConfigError

_SHIFTS = Registry("shift")
_CHUNK = 4096  # bounds the float copies made by resampling shifts on large domains


def register_shift(name: str) -> Callable:
    """Register ``fn(images_uint8, generator, **params) -> images_uint8`` as the shift ``name``."""

    def deco(fn: Callable) -> Callable:
        _SHIFTS[name] = fn
        return fn

    return deco


def list_shifts() -> list[str]:
    return sorted(_SHIFTS)


def check_shift(shift: dict) -> tuple[Callable, dict]:
    """Resolve ``{name: ..., **params}``; bad names or parameters fail here, before any data is loaded."""
    params = dict(shift)
    if "name" not in params:
        raise TransferConfigError(f"Shift {shift!r} has no 'name'; write e.g. {{name: rotate, degrees: 90}}.")
    name = params.pop("name")
    fn = _SHIFTS.get_or_raise(name)
    try:
        inspect.signature(fn).bind(None, None, **params)
    except TypeError as err:
        raise TransferConfigError(f"Shift {name!r} got bad parameters {params}: {err}.") from None
    return fn, params


def apply_shifts(images: torch.Tensor, shifts: list[dict], *seed_parts) -> torch.Tensor:
    """Apply ``shifts`` in order; shift ``i`` draws from a generator seeded by ``(*seed_parts, i)``."""
    for i, shift in enumerate(shifts):
        fn, params = check_shift(shift)
        gen = generator(*seed_parts, i, shift["name"])
        images = torch.cat([fn(chunk, gen, **params) for chunk in images.split(_CHUNK)])
    return images


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp_(0, 255).to(torch.uint8)


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _resample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Sample each output pixel at ``theta @ (x, y, 1)`` of the input (normalised coords); outside is black."""
    x = images.float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _to_uint8(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


@register_shift("rotate")
def rotate(images: torch.Tensor, gen: torch.Generator, degrees: float, random: bool = False) -> torch.Tensor:
    """Rotate counter-clockwise by ``degrees`` (or by a per-sample angle uniform in ``±degrees``)."""
    n = len(images)
    angle = _uniform(gen, n, -degrees, degrees) if random else torch.full((n,), float(degrees))
    cos, sin = torch.cos(torch.deg2rad(angle)), torch.sin(torch.deg2rad(angle))
    zero = torch.zeros(n)
    # Inverse map (output → input); y points down, so a counter-clockwise turn on screen is R(-angle).
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _resample(images, theta)


@register_shift("rescale")
def rescale(images: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Zoom by ``scale`` about the centre keeping the size (>1 crops in, <1 shrinks onto a black border)."""
    theta = torch.tensor([[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]]).expand(len(images), 2, 3)
    return _resample(images, theta)


@register_shift("invert")
def invert(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return 255 - images


@register_shift("gaussian_noise")
def gaussian_noise(images: torch.Tensor, gen: torch.Generator, std: float) -> torch.Tensor:
    """Add N(0, std²) noise, ``std`` in 0..1 image units."""
    noise = torch.randn(images.shape, generator=gen) * (std * 255)
    return _to_uint8(images.float() + noise)


@register_shift("blur")
def blur(images: torch.Tensor, gen: torch.Generator, sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    k = kernel_size or 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images, [k, k], [float(sigma), float(sigma)])


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601 luma, as PIL's convert("L")
    return (x * weights).sum(1, keepdim=True)


@register_shift("color_jitter")
def color_jitter(
    images: torch.Tensor, gen: torch.Generator, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0
) -> torch.Tensor:
    """Per-sample factors uniform in ``[max(0, 1 - v), 1 + v]``, applied like torchvision's ColorJitter."""
    n = len(images)

    def factor(v: float) -> torch.Tensor:
        return _uniform(gen, n, max(0.0, 1 - v), 1 + v).view(n, 1, 1, 1)

    x = images.float()
    if brightness:
        x = (x * factor(brightness)).clamp(0, 255)
    if contrast:
        mean = _gray(x).mean((1, 2, 3), keepdim=True)
        x = (mean + factor(contrast) * (x - mean)).clamp(0, 255)
    if saturation and x.shape[1] == 3:  # grayscale has no saturation to change
        gray = _gray(x)
        x = (gray + factor(saturation) * (x - gray)).clamp(0, 255)
    return _to_uint8(x)


_PHOTOS: list[torch.Tensor] = []
_REAL_PHOTOS: list[torch.Tensor] = []
# scikit-image's bundled colour photographs (in its wheel: no download): an astronaut, a cat, a cup of coffee and
# a rocket launch. Its other colour images are drawings, micrographs or a telescope's near-black sky.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def sample_photos() -> list[torch.Tensor]:
    """scikit-learn's bundled colour photos (china.jpg, flower.jpg) as uint8 ``[3, H, W]``, loaded once."""
    if not _PHOTOS:
        from sklearn.datasets import load_sample_images

        _PHOTOS.extend(torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous() for img in load_sample_images().images)
    return _PHOTOS


def real_photos() -> list[torch.Tensor]:
    """scikit-learn's two photos and scikit-image's four (:data:`SKIMAGE_PHOTOS`), uint8 ``[3, H, W]``, loaded once;
    without scikit-image a one-line error naming the extra that installs it."""
    if not _REAL_PHOTOS:
        try:
            import skimage.data
        except ImportError:
            raise TransferConfigError("these photos need scikit-image: `pip install scikit-image` (or "
                                      "`pip install 'lit-transfer[real]'`)") from None
        own = [torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy()).permute(2, 0, 1).contiguous()
               for name in SKIMAGE_PHOTOS]
        _REAL_PHOTOS.extend([*sample_photos(), *own])
    return _REAL_PHOTOS


def blend_patches(images: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """MNIST-M's blend (Ganin et al., 2016): ``|patch − image|`` per channel and pixel, uint8."""
    return (patches.to(torch.int16) - images.to(torch.int16)).abs_().to(torch.uint8)


@register_shift("patch_blend")
def patch_blend(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """MNIST-M construction: blend each RGB image with a random crop of one of scikit-learn's bundled photos.

    For every image a photo and a crop position are drawn; the result is ``|patch − image|`` per channel.
    Needs 3-channel images (``channels: 3``).
    """
    return blend_with_photos(images, gen, sample_photos(), "shift 'patch_blend'")


def blend_with_photos(images: torch.Tensor, gen: torch.Generator, photos: list[torch.Tensor],
                      what: str = "a photo blend") -> torch.Tensor:
    """Ganin et al.'s MNIST-M blend with ``photos`` (uint8 ``[3, H, W]``, each at least as large as the images):
    for every image, in order, a photo and then a crop position are drawn from ``gen``; the result is
    ``|patch − image|`` per channel and pixel (:func:`blend_patches`)."""
    if images.shape[1] != 3:
        raise TransferConfigError(f"{what} needs RGB images, got {images.shape[1]} channel(s); "
                                  "set channels: 3 on the domain")
    n, _, h, w = images.shape
    which = torch.randint(len(photos), (n,), generator=gen)
    patches = torch.empty_like(images)
    for i in range(n):
        photo = photos[int(which[i])]
        top = int(torch.randint(photo.shape[1] - h + 1, (1,), generator=gen))
        left = int(torch.randint(photo.shape[2] - w + 1, (1,), generator=gen))
        patches[i] = photo[:, top : top + h, left : left + w]
    return blend_patches(images, patches)
