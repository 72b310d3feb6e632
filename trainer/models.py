"""Small 3D segmentation networks for anisotropic EM volumes (z voxels twice as thick as xy).

Every model declares its geometry, which the data source (label cropping) and dense
prediction (tiling) read instead of guessing:

* ``in_channels``, ``n_classes``: input channels and number of output logits.
* ``patch_size``: ``(z, y, x)`` training input patch.
* ``offsets``: per-side crop of the output relative to the input; output voxel ``j`` is centred
  on input voxel ``j + offsets``.
* ``strides``: output stride; both models here have ``(1, 1, 1)`` (dense output).
* ``output_shape(input_shape)``: spatial shape of the network output for an input shape.
* ``valid_input_shape(shape)``: the nearest shape ``>= shape`` (per axis) the network accepts.
* ``default_margin(tile_shape)``: how much of each tile border dense prediction throws away
  (0 for valid convolutions, the approximate receptive-field radius for 'same' padding).

Example:
    >>> model = build_model("cnn3d", n_classes=2)
    >>> model.patch_size, model.offsets, model.output_shape(model.patch_size)
    ((9, 64, 64), (2, 7, 7), (5, 50, 50))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

Shape3 = tuple[int, int, int]


class ModelGeometryError(ValueError):
    """An input shape or patch size the network cannot process."""


def _shape3(shape: Sequence[int], what: str) -> Shape3:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ModelGeometryError(f"{what} must have 3 entries (z, y, x), got {shape}")
    return shape  # type: ignore[return-value]


class CNN3D(nn.Module):
    """Anisotropic valid-convolution CNN in the spirit of ELEKTRONN2's ``neuro3d_lite``.

    Layers (``f = base_filters``): conv (1,5,5) 1->f, conv (1,5,5) f->2f, max-pool (1,3,3)
    with stride 1, conv (3,3,3) 2f->3f, conv (3,3,3) 3f->3f, conv (1,1,1) 3f->n_classes, ReLU
    after every conv but the last. The first layers work in-plane because z voxels are twice
    as thick; the 3D layers then mix neighbouring sections.

    Output stride is kept at (1, 1, 1): the pooling layer has stride 1, so it widens the
    in-plane context cheaply without striding. On the CPU this learns fastest per second of
    training: every output voxel gets a label (4x the training signal of a (1,2,2)-strided
    net for the same patch), and dense prediction is one forward per tile instead of four
    shifted ones. ``offsets`` is ``(2, 7, 7)``: the receptive field is 5 x 15 x 15 voxels.
    With ``base_filters=8`` the net has about 29k parameters.

    Args:
        n_classes: number of output classes (logits).
        in_channels: number of input channels.
        base_filters: width of the first layer.
        patch_size: training input patch ``(z, y, x)``; must be larger than ``2 * offsets``.
    """

    offsets: Shape3 = (2, 7, 7)
    strides: Shape3 = (1, 1, 1)

    def __init__(
        self,
        n_classes: int = 2,
        in_channels: int = 1,
        base_filters: int = 8,
        patch_size: Sequence[int] = (9, 64, 64),
    ) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.in_channels = int(in_channels)
        self.patch_size = _shape3(patch_size, "CNN3D patch_size")
        if any(p <= 2 * o for p, o in zip(self.patch_size, self.offsets)):
            minimum = tuple(2 * o + 1 for o in self.offsets)
            raise ModelGeometryError(
                f"CNN3D patch_size {self.patch_size} is too small: each axis must be at least "
                f"{minimum} (2 * offsets {self.offsets} + 1)"
            )
        f = int(base_filters)
        self.features = nn.Sequential(
            nn.Conv3d(self.in_channels, f, (1, 5, 5)),
            nn.ReLU(inplace=True),
            nn.Conv3d(f, 2 * f, (1, 5, 5)),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=1),
            nn.Conv3d(2 * f, 3 * f, (3, 3, 3)),
            nn.ReLU(inplace=True),
            nn.Conv3d(3 * f, 3 * f, (3, 3, 3)),
            nn.ReLU(inplace=True),
            nn.Conv3d(3 * f, self.n_classes, 1),
        )
        _init_relu_convs(self.features[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, z, y, x)`` input to ``(N, n_classes, *output_shape)`` logits."""
        return self.features(x - 0.5)

    def output_shape(self, input_shape: Sequence[int]) -> Shape3:
        """Spatial output shape for a spatial input shape: ``input - 2 * offsets``."""
        shape = _shape3(input_shape, "input_shape")
        if shape != self.valid_input_shape(shape):
            raise ModelGeometryError(
                f"CNN3D cannot process input shape {shape}: each axis must be larger than "
                f"2 * offsets {self.offsets}"
            )
        return tuple(s - 2 * o for s, o in zip(shape, self.offsets))  # type: ignore[return-value]

    def valid_input_shape(self, shape: Sequence[int]) -> Shape3:
        """Any shape with at least one output voxel is valid; smaller axes are raised."""
        shape = _shape3(shape, "shape")
        return tuple(max(s, 2 * o + 1) for s, o in zip(shape, self.offsets))  # type: ignore[return-value]

    def default_margin(self, tile_shape: Sequence[int]) -> Shape3:
        """Valid convolutions need no tile margin: output tiles abut exactly."""
        return (0, 0, 0)


def _init_relu_convs(model: nn.Module) -> None:
    # He init keeps the signal's scale through the ReLU stack; PyTorch's default shrinks it
    # by about sqrt(3) per layer, which makes the first hundreds of steps learn only the prior
    for module in model.modules():
        if isinstance(module, nn.Conv3d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        # 4 groups when possible: per-group statistics stay meaningful at 8 channels
        groups = 4 if channels % 4 == 0 else 1
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "none":
        return nn.Identity()
    raise ModelGeometryError(f"UNet3D norm must be 'group', 'batch' or 'none', got {kind!r}")


class _ConvBlock(nn.Sequential):
    """Two 'same'-padded convolutions, each followed by a norm layer and ReLU."""

    def __init__(self, c_in: int, c_out: int, kernels: Sequence[Shape3], norm: str) -> None:
        layers: list[nn.Module] = []
        for i, k in enumerate(kernels):
            padding = tuple(s // 2 for s in k)
            layers += [
                nn.Conv3d(
                    c_in if i == 0 else c_out, c_out, k, padding=padding, bias=norm == "none"
                ),
                _norm_layer(norm, c_out),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class UNet3D(nn.Module):
    """Small anisotropic 3D U-Net with 'same' padding (``offsets = (0, 0, 0)``, dense output).

    Level 0 works on anisotropic voxels: its blocks use a (1,3,3) then a (3,3,3) convolution
    and it pools by (1,2,2), after which voxels are roughly isotropic, so deeper levels use
    (3,3,3) convolutions and (2,2,2) pooling. Upsampling is a transposed convolution with
    kernel = stride, followed by concatenation with the skip connection. Channels double per
    level starting at ``base_filters``. Like ``CNN3D`` it centres its input (``x - 0.5``).

    Inputs must be divisible by the product of the poolings, ``(2**(depth-1), 2**depth,
    2**depth)``; ``valid_input_shape`` rounds up to it. GroupNorm (default) works with batch
    size 1 but normalises with each input's own statistics, so dense prediction of a large
    volume by tiles is close to, not exactly equal to, a forward of the whole volume; with
    ``norm='batch'`` or ``'none'`` the eval-mode network is a local operator and tiles that
    keep ``receptive_radius`` voxels away from their borders reproduce the whole-volume
    forward exactly (see ``default_margin``).

    Args:
        n_classes: number of output classes (logits).
        in_channels: number of input channels.
        base_filters: channels of level 0.
        depth: number of poolings (>= 1).
        patch_size: training input patch ``(z, y, x)``; must be a valid input shape.
        norm: ``'group'``, ``'batch'`` or ``'none'``.
    """

    offsets: Shape3 = (0, 0, 0)
    strides: Shape3 = (1, 1, 1)

    def __init__(
        self,
        n_classes: int = 2,
        in_channels: int = 1,
        base_filters: int = 8,
        depth: int = 2,
        patch_size: Sequence[int] = (16, 64, 64),
        norm: str = "group",
    ) -> None:
        super().__init__()
        if int(depth) < 1:
            raise ModelGeometryError(f"UNet3D depth must be >= 1, got {depth}")
        self.n_classes = int(n_classes)
        self.in_channels = int(in_channels)
        self.depth = int(depth)
        self.norm = norm
        self.pools: list[Shape3] = [(1, 2, 2)] + [(2, 2, 2)] * (self.depth - 1)
        self.divisor: Shape3 = tuple(  # type: ignore[assignment]
            math.prod(p[a] for p in self.pools) for a in range(3)
        )
        self.patch_size = _shape3(patch_size, "UNet3D patch_size")
        if self.patch_size != self.valid_input_shape(self.patch_size):
            raise ModelGeometryError(
                f"UNet3D patch_size {self.patch_size} is not divisible by the pooling product "
                f"{self.divisor}; use {self.valid_input_shape(self.patch_size)}"
            )

        aniso: list[Shape3] = [(1, 3, 3), (3, 3, 3)]
        iso: list[Shape3] = [(3, 3, 3), (3, 3, 3)]
        widths = [int(base_filters) * 2**level for level in range(self.depth + 1)]
        self.down = nn.ModuleList()
        c_in = self.in_channels
        for level in range(self.depth):
            self.down.append(_ConvBlock(c_in, widths[level], aniso if level == 0 else iso, norm))
            c_in = widths[level]
        self.bottom = _ConvBlock(widths[-2], widths[-1], iso, norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level in reversed(range(self.depth)):
            pool = self.pools[level]
            self.up.append(nn.ConvTranspose3d(widths[level + 1], widths[level], pool, stride=pool))
            self.merge.append(
                _ConvBlock(2 * widths[level], widths[level], aniso if level == 0 else iso, norm)
            )
        self.head = nn.Conv3d(widths[0], self.n_classes, 1)
        _init_relu_convs(nn.ModuleList([self.down, self.bottom, self.up, self.merge]))
        self.receptive_radius = self._receptive_radius(aniso, iso)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, z, y, x)`` input to ``(N, n_classes, z, y, x)`` logits."""
        shape = tuple(x.shape[2:])
        if shape != self.valid_input_shape(shape):
            raise ModelGeometryError(
                f"UNet3D input shape {shape} is not divisible by {self.divisor}; pad it to "
                f"{self.valid_input_shape(shape)} (see valid_input_shape)"
            )
        x = x - 0.5
        skips = []
        for block, pool in zip(self.down, self.pools):
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool3d(x, pool)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def output_shape(self, input_shape: Sequence[int]) -> Shape3:
        """'Same' padding: the output has the input's shape (which must be valid)."""
        shape = _shape3(input_shape, "input_shape")
        if shape != self.valid_input_shape(shape):
            raise ModelGeometryError(
                f"UNet3D cannot process input shape {shape}: each axis must be a multiple of "
                f"{self.divisor}; use {self.valid_input_shape(shape)}"
            )
        return shape

    def valid_input_shape(self, shape: Sequence[int]) -> Shape3:
        """Round each axis up to a positive multiple of the pooling product ``divisor``."""
        shape = _shape3(shape, "shape")
        return tuple(max(d, -(-s // d) * d) for s, d in zip(shape, self.divisor))  # type: ignore[return-value]

    def default_margin(self, tile_shape: Sequence[int]) -> Shape3:
        """Tile margin for dense prediction: the receptive-field radius, at most a quarter tile.

        The margin is rounded up to a multiple of half the pooling product so tile steps stay
        aligned with the pooling grid (the U-Net is shift-equivariant only by multiples of
        ``divisor``). Voxels within the margin of an inner tile border are taken from the
        neighbouring tile. With the full radius the stitched result equals a whole-volume
        forward (for ``norm='batch'`` or ``'none'``); tiles shorter than about four radii get
        a quarter-tile margin instead, which bounds the extra work at 2x per axis and leaves
        small border effects.
        """
        tile = _shape3(tile_shape, "tile_shape")
        margin = []
        for t, r, d in zip(tile, self.receptive_radius, self.divisor):
            unit = max(1, d // 2)
            margin.append(min(-(-r // unit) * unit, t // 4 // unit * unit))
        return tuple(margin)  # type: ignore[return-value]

    def _receptive_radius(self, aniso: list[Shape3], iso: list[Shape3]) -> Shape3:
        # deepest path dominates: encoder convs + pools, bottleneck, decoder convs
        radius = [0.0, 0.0, 0.0]
        jump = [1, 1, 1]

        def convs(kernels: list[Shape3]) -> None:
            for k in kernels:
                for a in range(3):
                    radius[a] += (k[a] - 1) / 2 * jump[a]

        for level, pool in enumerate(self.pools):
            convs(aniso if level == 0 else iso)
            for a in range(3):
                radius[a] += (pool[a] - 1) * jump[a]
                jump[a] *= pool[a]
        convs(iso)
        for level in reversed(range(self.depth)):
            for a in range(3):
                jump[a] //= self.pools[level][a]
            convs(aniso if level == 0 else iso)
        return tuple(math.ceil(r) for r in radius)  # type: ignore[return-value]


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn3d": CNN3D, "unet3d": UNet3D}


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model by name, e.g. from a config's ``model = dict(name=..., ...)``.

    Args:
        name: ``'cnn3d'`` or ``'unet3d'`` (case-insensitive).
        **kwargs: constructor arguments of that model.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        cls = MODELS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown model name {name!r}; expected one of {sorted(MODELS)}") from None
    return cls(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
