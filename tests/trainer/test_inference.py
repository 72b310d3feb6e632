"""Tiled dense prediction against one forward of the whole volume, and device selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainer.devices import DeviceUnavailableError, device_info, resolve_device
from trainer.inference import predict_dense
from trainer.models import CNN3D, UNet3D

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _raw(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def whole_forward(model: nn.Module, raw: np.ndarray) -> np.ndarray:
    """The reference: softmax of one plain PyTorch forward of the whole volume, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.from_numpy(raw)[None, None])
        return torch.softmax(logits, dim=1)[0].numpy()
    finally:
        model.train(was_training)


def _trained_looking(model: UNet3D) -> UNet3D:
    """Running statistics from real activations and a confident head, like a trained net.

    A freshly initialised U-Net predicts nearly the same probability everywhere, which would
    hide stitching errors.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(1, model.in_channels, *model.patch_size))
        model.head.weight *= 30
    return model


@pytest.fixture(scope="module")
def cnn() -> CNN3D:
    return CNN3D(base_filters=4, patch_size=(7, 24, 24))


@pytest.fixture(scope="module")
def unet() -> UNet3D:
    # batch norm in eval mode is a local operator, so tiles can reproduce the whole volume
    torch.manual_seed(1)
    return _trained_looking(UNet3D(base_filters=4, depth=2, patch_size=(8, 32, 32), norm="batch"))


@pytest.mark.parametrize("shape", [(7, 24, 24), (9, 30, 27)])
def test_cnn_single_tile_equals_direct_forward(cnn, shape):
    raw = _raw(shape)
    dense = predict_dense(cnn, raw, tile_shape=shape)
    direct = whole_forward(cnn, raw)
    assert dense.shape == (2, *(s - 2 * o for s, o in zip(shape, cnn.offsets)))
    assert dense.dtype == np.float32
    np.testing.assert_allclose(dense, direct, atol=ATOL)


@pytest.mark.parametrize(
    "shape, tile_shape",
    [
        ((12, 50, 61), (7, 24, 24)),  # edge tiles shifted inward on every axis
        ((7, 24, 24), (7, 24, 24)),  # exactly one patch
        ((5, 15, 100), (5, 15, 16)),  # the smallest volume the net accepts, one output voxel
        ((20, 33, 29), (9, 17, 40)),  # tile larger than the volume along x
        ((13, 41, 37), None),  # default tile
    ],
)
def test_cnn_tiles_stitch_exactly(cnn, shape, tile_shape):
    raw = _raw(shape, seed=1)
    dense = predict_dense(cnn, raw, tile_shape=tile_shape)
    np.testing.assert_allclose(dense, whole_forward(cnn, raw), atol=ATOL)


def test_unet_single_tile_equals_direct_forward(unet):
    raw = _raw((16, 32, 64))
    np.testing.assert_allclose(
        predict_dense(unet, raw, tile_shape=(16, 32, 64)),
        whole_forward(unet, raw),
        atol=ATOL,
    )


def test_unet_tiles_with_receptive_field_margin_equal_direct_forward(unet):
    raw = _raw((8, 32, 112), seed=2)
    tile = (8, 32, 64)
    margin = tuple(-(-r // 2) * 2 for r in unet.receptive_radius)  # aligned to the pooling grid
    margin = (0, 0, margin[2])  # one tile along z and y: no inner borders there
    dense = predict_dense(unet, raw, tile_shape=tile, margin=margin)
    direct = whole_forward(unet, raw)
    np.testing.assert_allclose(dense, direct, atol=ATOL)

    # tiles of at least four radii get the full radius as default margin
    wide = (8, 32, 96)
    assert unet.default_margin(wide)[2] >= unet.receptive_radius[2]
    np.testing.assert_allclose(predict_dense(unet, raw, tile_shape=wide), direct, atol=ATOL)

    # the margin is what makes it exact: without it, voxels next to inner borders differ
    no_margin = predict_dense(unet, raw, tile_shape=tile, margin=(0, 0, 0))
    assert np.abs(no_margin - direct).max() > 1e-2


def test_unet_inner_tile_borders_are_kept_margin_voxels_away(unet):
    raw = _raw((8, 32, 96), seed=3)
    direct = whole_forward(unet, raw)
    tile, margin = (8, 32, 48), (0, 0, 8)
    dense = predict_dense(unet, raw, tile_shape=tile, margin=margin)
    # x tiles start at 0, 32, 48 and keep [0, 40), [40, 48), [48, 96): far edges exact
    np.testing.assert_allclose(dense[..., :16], direct[..., :16], atol=ATOL)
    np.testing.assert_allclose(dense[..., -16:], direct[..., -16:], atol=ATOL)


@pytest.mark.parametrize("shape", [(15, 30, 47), (9, 35, 20), (2, 6, 5)])
def test_unet_accepts_any_shape_by_padding(unet, shape):
    dense = predict_dense(unet, _raw(shape), tile_shape=unet.patch_size)
    assert dense.shape == (2, *shape)
    np.testing.assert_allclose(dense.sum(axis=0), 1.0, atol=1e-5)


def test_group_norm_unet_predicts_big_volumes_by_tiles():
    model = UNet3D(base_filters=4, depth=2, patch_size=(8, 32, 32))
    dense = predict_dense(model, _raw((10, 70, 50)), tile_shape=(8, 32, 32))
    assert dense.shape == (2, 10, 70, 50)
    assert np.isfinite(dense).all()
    np.testing.assert_allclose(dense.sum(axis=0), 1.0, atol=1e-5)


def test_integer_input_is_divided_by_255(cnn):
    raw = np.random.default_rng(4).integers(0, 256, (7, 30, 30), dtype=np.uint8)
    as_int = predict_dense(cnn, raw)
    as_float = predict_dense(cnn, raw.astype(np.float32) / 255)
    np.testing.assert_allclose(as_int, as_float, atol=ATOL)
    assert not np.allclose(as_int, predict_dense(cnn, raw.astype(np.float32)), atol=1e-3)


def test_channel_axis_is_optional(cnn):
    raw = _raw((7, 26, 26))
    np.testing.assert_array_equal(predict_dense(cnn, raw), predict_dense(cnn, raw[None]))


@pytest.mark.parametrize("train_mode", [True, False])
def test_model_mode_is_restored(unet, train_mode):
    unet.train(train_mode)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    raw = _raw((8, 32, 32))
    first = predict_dense(unet, raw)
    assert unet.training is train_mode
    # eval mode was used (batch norm running statistics neither used from the batch nor updated)
    for key, value in unet.state_dict().items():
        assert torch.equal(value, before[key]), key
    np.testing.assert_allclose(first, whole_forward(unet, raw), atol=ATOL)


class _FailingForward(CNN3D):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")


@pytest.mark.parametrize(
    "model, shape, error",
    [
        (CNN3D(base_filters=4), (4, 30, 30), ValueError),  # refused before the first tile
        (_FailingForward(base_filters=4), (7, 24, 24), RuntimeError),  # fails inside eval mode
    ],
)
def test_mode_is_restored_after_an_error(model, shape, error):
    model.train()
    with pytest.raises(error):
        predict_dense(model, _raw(shape))
    assert model.training


def test_batches_of_tiles_give_the_same_result(cnn):
    raw = _raw((11, 40, 40), seed=5)
    one = predict_dense(cnn, raw, tile_shape=(7, 20, 20), batch_size=1)
    many = predict_dense(cnn, raw, tile_shape=(7, 20, 20), batch_size=5)
    np.testing.assert_allclose(one, many, atol=ATOL)


def test_amp_and_explicit_cpu_device_are_harmless_on_cpu(cnn):
    raw = _raw((7, 24, 24))
    np.testing.assert_array_equal(
        predict_dense(cnn, raw), predict_dense(cnn, raw, device="cpu", amp=True)
    )


class _Strided(nn.Module):
    in_channels, n_classes, patch_size = 1, 2, (4, 8, 8)
    offsets, strides = (0, 0, 0), (1, 2, 2)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1)


@pytest.mark.parametrize(
    "model, raw, kwargs, match",
    [
        (CNN3D(), np.zeros((2, 9, 64, 64), np.float32), {}, r"2 channel\(s\).*expects 1"),
        (CNN3D(), np.zeros((64, 64), np.float32), {}, r"\(z, y, x\) or \(channels, z, y, x\)"),
        (CNN3D(), np.zeros((4, 64, 64), np.float32), {}, r"too small.*\(5, 15, 15\)"),
        (
            UNet3D(),
            np.zeros((16, 64, 128), np.float32),
            {"tile_shape": (16, 64, 64), "margin": (0, 0, 32)},
            "no room inside a margin of 32",
        ),
        (_Strided(), np.zeros((4, 8, 8), np.float32), {}, r"strides \(1, 2, 2\)"),
    ],
)
def test_bad_input_is_reported(model, raw, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_dense(model, raw, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu(cnn):
    raw = _raw((12, 50, 61))
    on_cpu = predict_dense(cnn, raw, tile_shape=(7, 24, 24))
    on_gpu = predict_dense(cnn, raw, device="cuda", tile_shape=(7, 24, 24))
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)
    assert next(cnn.parameters()).device.type == "cpu"  # the caller's model stays put
    half = predict_dense(cnn, raw, device="cuda", amp=True)
    np.testing.assert_allclose(half, on_cpu, atol=1e-2)


# devices


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("cpu", torch.device("cpu")),
        (" CPU ", torch.device("cpu")),
        (torch.device("cpu"), torch.device("cpu")),
        ("auto", torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")),
    ],
)
def test_resolve_device(spec, expected):
    assert resolve_device(spec) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda0", "tpu:1", ""])
def test_resolve_device_rejects_unknown_specs(spec):
    with pytest.raises(ValueError, match="expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_says_what_to_do(spec):
    with pytest.raises(DeviceUnavailableError, match="no GPU is visible.*--device cpu"):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_index_out_of_range_is_reported():
    with pytest.raises(DeviceUnavailableError, match="GPU\\(s\\) are visible"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_device_info_cpu():
    info = device_info("cpu")
    assert info["device"] == "cpu"
    assert info["torch_version"] == torch.__version__
    assert info["cuda_version"] == torch.version.cuda
    assert info["gpu_name"] is None and info["gpu_memory_gib"] is None
    assert info["cpu_threads"] >= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_device_info_cuda():
    info = device_info("cuda")
    assert info["device"] == "cuda:0"
    assert info["gpu_name"] == torch.cuda.get_device_name(0)
    assert info["gpu_memory_gib"] > 0
