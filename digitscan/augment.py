"""Batch augmentation that makes MNIST look like preprocessed real scans; runs on the batch's device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur

from .preprocess import MEAN, STD


def augment(x: torch.Tensor) -> torch.Tensor:
    """Randomly distort a batch of N x 1 x 28 x 28 digits with values in [0, 1]; return the same shape.

    Geometry (rotation, scale, aspect, shear, shift), stroke thickness, low resolution, binarisation,
    blur, contrast (gamma) and noise, each drawn per sample from torch's global generator.
    """
    x = _affine(x)
    x = _thickness(x)
    x = _low_resolution(x, _pick(x, 0.2))
    x = torch.where(_pick(x, 0.1), (x > 0.45).to(x.dtype), x)
    x = _blur(x, _pick(x, 0.25))
    gamma = torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(-0.5, 0.5).exp()
    x = x.clamp(0, 1).pow(gamma)
    noise = torch.randn_like(x) * torch.empty(x.shape[0], 1, 1, 1, device=x.device).uniform_(0, 0.06)
    x = torch.where(_pick(x, 0.3), x + noise, x)
    peak = x.amax(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return (x / peak).clamp(0, 1)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels to the model's input scale."""
    return (x - MEAN) / STD


def _pick(x: torch.Tensor, p: float) -> torch.Tensor:
    """A per-sample boolean mask, broadcastable over the image, true with probability p."""
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p


def _affine(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    u = lambda lo, hi: torch.empty(n, device=x.device).uniform_(lo, hi)  # noqa: E731
    angle = u(-14, 14) * (math.pi / 180)
    scale = u(0.85, 1.12)
    aspect = u(-0.12, 0.12).exp()
    shear = u(-0.25, 0.25)
    cos, sin = angle.cos(), angle.sin()
    sx, sy = scale * aspect, scale / aspect
    # theta maps output coordinates to input coordinates: inverse of rotate . shear . scale.
    a = torch.stack([cos / sx, (sin + shear * cos) / sx, u(-0.13, 0.13)], dim=1)
    b = torch.stack([-sin / sy, (cos - shear * sin) / sy, u(-0.13, 0.13)], dim=1)
    theta = torch.stack([a, b], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _thickness(x: torch.Tensor) -> torch.Tensor:
    """Thicker strokes (dilation) or thinner ones (erosion), blended in by a random amount."""
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    amount = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
    choice = torch.rand(x.shape[0], 1, 1, 1, device=x.device)
    x = torch.where(choice < 0.25, x + (thick - x) * amount, x)
    return torch.where(choice > 0.8, x + (thin - x) * amount, x)


def _low_resolution(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Down to 10-16 px and back up, like small crops scaled up by preprocessing."""
    size = int(torch.randint(10, 17, ()).item())
    small = F.interpolate(x, size=(size, size), mode="area")
    return torch.where(mask, F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False), x)


def _blur(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    sigma = float(torch.empty(()).uniform_(0.4, 1.1))
    return torch.where(mask, gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma]), x)
