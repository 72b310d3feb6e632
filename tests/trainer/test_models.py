"""Geometry and learning sanity of the shipped 3D networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.models import (
    CNN3D,
    ModelGeometryError,
    UNet3D,
    build_model,
    count_parameters,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _forward_shape(model: torch.nn.Module, shape: tuple[int, int, int]) -> tuple[int, ...]:
    model.eval()
    with torch.inference_mode():
        out = model(torch.rand(1, model.in_channels, *shape))
    assert out.shape[:2] == (1, model.n_classes)
    return tuple(out.shape[2:])


@pytest.mark.parametrize(
    "model, shape",
    [
        (CNN3D(), (9, 64, 64)),
        (CNN3D(), (5, 15, 15)),
        (CNN3D(), (12, 33, 70)),
        (CNN3D(n_classes=3, in_channels=2, base_filters=4, patch_size=(7, 20, 20)), (8, 21, 17)),
        (UNet3D(depth=1, base_filters=4), (3, 10, 6)),
        (UNet3D(depth=2, base_filters=4), (16, 64, 64)),
        (UNet3D(depth=2, base_filters=4), (6, 20, 36)),
        (UNet3D(depth=3, base_filters=4, patch_size=(8, 32, 32)), (12, 24, 40)),
    ],
)
def test_output_shape_matches_real_forward(model, shape):
    assert _forward_shape(model, shape) == model.output_shape(shape)


@pytest.mark.parametrize(
    "model",
    [CNN3D(), CNN3D(patch_size=(11, 31, 47)), UNet3D(), UNet3D(depth=3, patch_size=(8, 32, 32))],
)
def test_geometry_attributes_agree_with_forward_on_patch(model):
    expected = tuple(
        -(-(p - 2 * o) // s) for p, o, s in zip(model.patch_size, model.offsets, model.strides)
    )
    assert _forward_shape(model, model.patch_size) == expected


@pytest.mark.parametrize(
    "model, shape, valid",
    [
        (CNN3D(), (9, 64, 64), (9, 64, 64)),
        (CNN3D(), (1, 3, 100), (5, 15, 100)),
        (UNet3D(depth=2), (16, 64, 64), (16, 64, 64)),
        (UNet3D(depth=2), (15, 61, 1), (16, 64, 4)),
        (UNet3D(depth=3, patch_size=(8, 32, 32)), (9, 33, 8), (12, 40, 8)),
    ],
)
def test_valid_input_shape_rounds_up_to_what_the_net_accepts(model, shape, valid):
    assert model.valid_input_shape(shape) == valid
    assert model.valid_input_shape(valid) == valid


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CNN3D(patch_size=(4, 64, 64)), r"too small.*\(5, 15, 15\)"),
        (lambda: CNN3D(patch_size=(9, 64)), "3 entries"),
        (
            lambda: UNet3D(depth=2, patch_size=(15, 64, 64)),
            r"not divisible.*\(2, 4, 4\).*\(16, 64, 64\)",
        ),
        (lambda: UNet3D(depth=0), "depth must be >= 1"),
        (lambda: UNet3D(norm="layer"), "'group', 'batch' or 'none'"),
        (lambda: CNN3D().output_shape((4, 64, 64)), "cannot process input shape"),
        (lambda: UNet3D().output_shape((16, 62, 64)), r"use \(16, 64, 64\)"),
        (lambda: UNet3D()(torch.zeros(1, 1, 16, 62, 64)), "not divisible"),
        (lambda: build_model("resnet"), r"unknown model name 'resnet'.*cnn3d"),
    ],
)
def test_bad_geometry_is_reported(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_geometry_error_is_a_value_error():
    assert issubclass(ModelGeometryError, ValueError)


@pytest.mark.parametrize("name, cls", [("cnn3d", CNN3D), ("UNet3D", UNet3D)])
def test_build_model_passes_arguments(name, cls):
    model = build_model(name, n_classes=3, base_filters=4)
    assert type(model) is cls
    assert model.n_classes == 3
    assert model.training


def test_count_parameters_counts_trainable_only():
    model = CNN3D()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    assert 20_000 <= total <= 50_000  # the size the demo's CPU speed was tuned for
    model.features[0].weight.requires_grad_(False)
    frozen = model.features[0].weight.numel()
    assert count_parameters(model) == total - frozen
    assert count_parameters(model, trainable_only=False) == total


def _influence(model: torch.nn.Module, shape: tuple[int, int, int]) -> np.ndarray:
    """Which input voxels the centre output voxel depends on (gradient support)."""
    model.eval()
    x = torch.randn(1, 1, *shape, requires_grad=True)
    out = model(x)
    centre = tuple(s // 2 for s in out.shape[2:])
    out[(0, slice(None), *centre)].sum().backward()
    return (x.grad[0, 0] != 0).numpy()


def test_cnn3d_receptive_field_is_twice_the_offsets_plus_one():
    support = _influence(CNN3D(), (9, 31, 31))
    extent = [np.ptp(np.nonzero(support)[a]) + 1 for a in range(3)]
    assert extent == [2 * o + 1 for o in CNN3D.offsets]


@pytest.mark.parametrize("depth", [1, 2])
def test_unet_receptive_radius_bounds_the_real_influence(depth):
    model = UNet3D(depth=depth, base_filters=4, norm="none")
    shape = (24, 48, 48)
    support = _influence(model, shape)
    coords = np.nonzero(support)
    for a, s in enumerate(shape):
        reach = np.abs(coords[a] - s // 2).max()
        assert reach <= model.receptive_radius[a]
        assert reach >= model.receptive_radius[a] // 2  # the estimate is not wildly loose


def _blobs(shape: tuple[int, int, int], n_cells: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells (nearest of random seeds, z twice as thick) with dark 1-voxel boundaries."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, 1, (n_cells, 3)) * np.array(shape)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    dist = (((grid[..., None, :] - seeds) * np.array([2.0, 1.0, 1.0])) ** 2).sum(-1)
    cell = dist.argmin(-1)
    boundary = np.zeros(shape, bool)
    for a in (1, 2):
        change = np.diff(cell, axis=a) != 0
        lo = [slice(None)] * 3
        lo[a] = slice(None, -1)
        boundary[tuple(lo)] |= change
    raw = np.where(boundary, 0.2, 0.75) + rng.normal(0, 0.05, shape)
    return raw.astype(np.float32), boundary.astype(np.int64)


def test_cnn3d_overfits_one_synthetic_batch():
    model = CNN3D(base_filters=4, patch_size=(7, 32, 32))
    raw, label = _blobs(model.patch_size, n_cells=12, seed=1)
    off = model.offsets
    target = label[off[0] : -off[0], off[1] : -off[1], off[2] : -off[2]]
    x = torch.from_numpy(raw)[None, None]
    y = torch.from_numpy(target)[None]
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    p = y.float().mean().item()
    prior_entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))  # loss of predicting the prior
    assert np.mean(losses[-5:]) < 0.8 * prior_entropy
    assert np.mean(losses[-5:]) < 0.6 * losses[0]
    model.eval()
    with torch.inference_mode():
        error = (model(x).argmax(1) != y).float().mean().item()
    assert error < 0.75 * min(p, 1 - p)  # clearly better than guessing the majority class


@pytest.mark.parametrize(
    "model, tile, margin",
    [
        (CNN3D(), (9, 64, 64), (0, 0, 0)),
        (UNet3D(depth=2), (48, 256, 256), (11, 24, 24)),  # full radius (11, 23, 23), aligned
        (UNet3D(depth=2), (16, 64, 64), (4, 16, 16)),  # capped at a quarter tile
        (UNet3D(depth=3, patch_size=(8, 32, 32)), (8, 16, 16), (2, 4, 4)),
        (UNet3D(depth=1), (3, 10, 6), (0, 2, 1)),
    ],
)
def test_default_margin(model, tile, margin):
    assert model.default_margin(tile) == margin
    if isinstance(model, UNet3D):
        for t, m, d in zip(tile, margin, model.divisor):
            assert (t - 2 * m) % d == 0 and t - 2 * m >= t // 2  # steps stay on the pooling grid
