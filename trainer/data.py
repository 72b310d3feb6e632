"""Volume data for training: ELEKTRONN2's ``BatchCreatorImage`` on numpy, for PyTorch models.

``BatchCreatorImage`` reads raw and label cubes from h5 files into RAM, splits them into
training and validation cubes and cuts random, augmented patches that fit the model:
the input patch has the model's ``patch_size``; the labels are cropped to the model's
output (``patch_size - 2 * offsets``) and subsampled by its ``strides``.

Example:
    >>> from types import SimpleNamespace
    >>> model = SimpleNamespace(patch_size=(8, 32, 32), offsets=(2, 4, 4),
    ...                         strides=(1, 2, 2), in_channels=1)
    >>> data = BatchCreatorImage(model, d_path="data/demo", l_path="data/demo",
    ...                          d_files=[("raw_0.h5", "raw"), ("raw_1.h5", "raw")],
    ...                          l_files=[("labels_0.h5", "lab"), ("labels_1.h5", "lab")],
    ...                          valid_cubes=[1])  # doctest: +SKIP
    >>> x, y = data.getbatch(4, warp=0.5)  # doctest: +SKIP
    >>> x.shape, y.shape  # doctest: +SKIP
    ((4, 1, 8, 32, 32), (4, 1, 4, 12, 12))
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.augment import flip_pair, grey_augment, random_affine, source_box, warp_sample
from trainer.cubes import (
    DataError,
    LazyCube,
    check_chunks_present,
    check_label_volume,
    chunk_cache_share,
    label_cube,
    load_preview_data,
    open_entry,
    raw_cube,
    resolve_path,
)
from trainer.volumes import ChunkCache

# DataError, LazyCube and load_preview_data live with the cubes (trainer.cubes); configs and
# scripts find them here, beside the class that uses them
__all__ = [
    "BatchCreatorImage",
    "DataError",
    "LazyCube",
    "NoValidationData",
    "load_preview_data",
]

# getbatch options of ELEKTRONN2 that VoxelBoard does not implement; a falsy value (the
# ELEKTRONN2 default) is accepted so old configs that spell out the defaults still work.
_UNSUPPORTED_GETBATCH = (
    "affinities",
    "nhood_targets",
    "ret_ll_mask",
    "nga_blur_noise_probability",
    "blurry_blobs_probability",
    "blurry_blobs_args",
    "noisy_random_erasing_probability",
    "noisy_random_erasing_args",
    "uniform_random_erasing_probability",
    "uniform_random_erasing_args",
)
_WARP_ARGS = ("warp_amount", "sample_aniso", "lock_z", "no_x_flip", "perspective")
# a warp whose cut-out leaves the cube is redrawn this often before the patch is cut unwarped
_WARP_TRIES = 20
# examples rejected by ignore_thresh per requested example before giving up
_IGNORE_TRIES = 100
#: values of ``label_crop``: None (labels as large as the raw cube or smaller by the
#: model's offsets) or 'centre' (any smaller label cube, centred in the raw cube)
LABEL_CROPS = (None, "centre")


class NoValidationData(ValueError):
    """``getbatch(source='valid')`` was asked for but no cube is marked for validation."""


class BatchCreatorImage:
    """Random training/validation patches from h5 volumes, cut to fit a model.

    Args:
        input_node: the model (or any object) exposing ``patch_size`` (z, y, x) of the input,
            ``offsets`` (z, y, x) cropped per side from input to output, ``strides`` (z, y, x)
            of the output grid and ``in_channels``.
        target_node: accepted for ELEKTRONN2 signature compatibility; ignored.
        d_path: folder of the raw files (``~`` expanded); ``None``: names are paths.
        l_path: folder of the label files (``~`` expanded); ``None``: names are paths.
        d_files: ``[(file name, dataset key), ...]`` of raw cubes, (z, y, x) or (c, z, y, x).
        l_files: same for the label cubes: integer, (z, y, x) or (c, z, y, x), the same
            spatial shape as the raw cube or smaller by the model's ``offsets`` on each side
            (the model's output for the whole raw cube, as ELEKTRONN2's examples store it).
        cube_prios: sampling weights of the training cubes (default: label size).
        valid_cubes: indices into ``d_files`` of the validation cubes.
        border_mode: accepted for compatibility (only used by ELEKTRONN2's img-scalar mode).
        aniso_factor: z voxel size over x/y voxel size, used by the warp.
        target_vec_ix: accepted for compatibility; vector targets are not supported.
        target_discrete_ix: accepted for compatibility; all labels are discrete here.
        h5stream: read HDF5 cubes patch by patch from disk instead of loading them into RAM.
            zarr and N5 cubes are always read that way; HDF5 cubes too when all cubes
            together (as float32 raw plus labels) exceed ``memory_budget_mb``.
        zxy: ``False`` if the files store (x, y, z): the last spatial axis is moved first.
        seed: seed of this instance's random generator (default: from pid and time).
        memory_budget_mb: MiB of cubes to hold in RAM at most (default: the config's
            ``data_memory_budget_mb``); above it HDF5 cubes are read lazily too. Lazy
            cubes keep decoded chunks in ``chunk_cache`` within the same budget: half for
            the background workers together, half for this process (docs/data.md).
        label_crop: ``'centre'``: a label cube of any smaller size is taken as centred in
            its raw cube (an even size difference per axis); ``None`` (default): labels
            must be as large as the raw cube or smaller by exactly the model's offsets.
        allow_missing_chunks: train on zarr/N5 cubes with chunk files missing (they read as
            the fill value; a warning counts them); default: refused, naming the array and
            its first missing chunks.

    A file entry is ``(file, key)`` or ``(file, key, {"scale": level})`` for a level of an
    OME-Zarr multiscale group; ``file`` is an HDF5 file or a zarr/N5 folder
    (``trainer.volumes`` tells which by content).

    Raises:
        FileNotFoundError: a data file is missing (all missing paths are listed).
        DataError: a dataset key is missing, shapes do not fit each other or the model,
            or the arguments are inconsistent.
    """

    def __init__(
        self,
        input_node: Any,
        target_node: Any = None,
        d_path: str | os.PathLike | None = None,
        l_path: str | os.PathLike | None = None,
        d_files: Sequence[tuple[str, str]] | None = None,
        l_files: Sequence[tuple[str, str]] | None = None,
        cube_prios: Sequence[float] | None = None,
        valid_cubes: Sequence[int] | None = None,
        border_mode: str = "crop",
        aniso_factor: float = 2,
        target_vec_ix: Any = None,
        target_discrete_ix: Any = None,
        h5stream: bool = False,
        zxy: bool = True,
        seed: int | None = None,
        memory_budget_mb: float | None = None,
        label_crop: str | None = None,
        allow_missing_chunks: bool = False,
    ) -> None:
        if label_crop not in LABEL_CROPS:
            raise DataError(
                f"label_crop={label_crop!r}: expected None (labels as large as the raw cube "
                "or smaller by the model's offsets) or 'centre' (any smaller label cube, "
                "centred in its raw cube)"
            )
        self.label_crop = label_crop
        self.patch_size, self.offsets, self.strides = _model_geometry(input_node)
        self.target_ps = self.patch_size - 2 * self.offsets
        # a y/x swap only keeps the shapes for square patches and outputs
        ps, tps = self.patch_size, self.target_ps
        self._can_swap = bool(ps[1] == ps[2] and tps[1] == tps[2])
        self.in_channels = getattr(input_node, "in_channels", None)
        self.aniso_factor = float(aniso_factor)
        self.border_mode = border_mode
        self.h5stream = h5stream
        self.zxy = zxy

        d_files, l_files = list(d_files or []), list(l_files or [])
        if not d_files:
            raise DataError("d_files is empty: give a list of (h5 file, dataset key) raw cubes")
        if len(d_files) != len(l_files):
            raise DataError(
                f"d_files has {len(d_files)} entries but l_files has {len(l_files)}: "
                "give one label cube per raw cube"
            )
        valid = [int(k) for k in (valid_cubes or [])]
        bad = [k for k in valid if not 0 <= k < len(d_files)]
        if bad:
            raise DataError(
                f"valid_cubes {bad} out of range: there are {len(d_files)} cubes "
                f"(indices 0..{len(d_files) - 1}) in d_files"
            )
        self.valid_cubes = sorted(set(valid))

        d_names = [resolve_path(d_path, entry[0]) for entry in d_files]
        l_names = [resolve_path(l_path, entry[0]) for entry in l_files]
        missing = [p for p in dict.fromkeys(d_names + l_names) if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(
                "data file(s) not found: "
                + ", ".join(missing)
                + " (check d_path/l_path and d_files/l_files in data_init_kwargs; "
                "`python run.py demo-data` makes the demo dataset)"
            )

        self.train_d: list[np.ndarray] = []
        self.train_l: list[np.ndarray] = []
        self.valid_d: list[np.ndarray] = []
        self.valid_l: list[np.ndarray] = []
        self._train_lo: list[np.ndarray] = []
        self._valid_lo: list[np.ndarray] = []
        self._train_names: list[str] = []
        self._valid_names: list[str] = []
        self.n_labelled_pixel = 0
        self.t_n_f: int | None = None
        self.n_f: int | None = None
        d_vols = [open_entry(name, entry, "d_files") for name, entry in zip(d_names, d_files)]
        l_vols = [open_entry(name, entry, "l_files") for name, entry in zip(l_names, l_files)]
        for vol in l_vols:
            check_label_volume(vol)
        if memory_budget_mb is None:
            from trainer.config import DEFAULTS

            memory_budget_mb = DEFAULTS["data_memory_budget_mb"]
        self.memory_budget_mb = float(memory_budget_mb)
        in_ram = sum(4 * v.nbytes // v.dtype.itemsize for v in d_vols) + sum(
            v.nbytes for v in l_vols
        )
        stream = bool(h5stream) or in_ram > self.memory_budget_mb * 2**20
        #: decoded chunks of the lazy cubes, per reading process (see ``chunk_cache_share``)
        self.chunk_cache = ChunkCache(
            functools.partial(chunk_cache_share, int(self.memory_budget_mb * 2**20))
        )
        #: per cube (in ``d_files`` order): read from disk patch by patch
        self.lazy: list[bool] = []
        # every chunk of a cube can be read: warps reach past the unwarped patches' box
        read_boxes = []  # (volume, stored box, role)
        for k, (d_vol, l_vol) in enumerate(zip(d_vols, l_vols)):
            raw = raw_cube(d_vol, zxy, stream or d_vol.format != "hdf5", self.chunk_cache)
            lab = label_cube(l_vol, zxy, stream or l_vol.format != "hdf5", self.chunk_cache)
            self.lazy.append(isinstance(raw, LazyCube) or isinstance(lab, LazyCube))
            lo = self._check_cube(raw, lab, d_vol.name, l_vol.name)
            role = "validation" if k in self.valid_cubes else "training"
            read_boxes.append((d_vol, None, f"{role} raw, cube {k}"))
            read_boxes.append((l_vol, None, f"{role} labels, cube {k}"))
            self.n_labelled_pixel += int(np.prod(lab.shape[1:]))
            if k in self.valid_cubes:
                self.valid_d.append(raw)
                self.valid_l.append(lab)
                self._valid_lo.append(lo)
                self._valid_names.append(d_vol.path)
            else:
                self.train_d.append(raw)
                self.train_l.append(lab)
                self._train_lo.append(lo)
                self._train_names.append(d_vol.path)

        if cube_prios is None:
            prios = np.array([np.prod(lab.shape[1:]) for lab in self.train_l], float)
        else:
            prios = np.asarray(cube_prios, float)
            if prios.shape != (len(self.train_l),) or (prios < 0).any() or prios.sum() <= 0:
                raise DataError(
                    f"cube_prios {list(cube_prios)} must be {len(self.train_l)} non-negative "
                    "weights, one per training cube, not all zero"
                )
        self._train_p = prios / prios.sum() if prios.size else prios
        #: chunks missing under the read boxes, accepted with ``allow_missing_chunks``
        self.n_missing_chunks = check_chunks_present(read_boxes, bool(allow_missing_chunks))
        #: warps redrawn too often to fit a cube, cut unwarped instead
        self.n_failed_warp = 0
        self.reseed(seed)

    # -- public API --------------------------------------------------------------------

    @property
    def n_train_cubes(self) -> int:
        """Number of training cubes."""
        return len(self.train_d)

    @property
    def n_valid_cubes(self) -> int:
        """Number of validation cubes."""
        return len(self.valid_d)

    def reseed(self, seed: int | None = None) -> None:
        """Re-seed this instance's random generator (``None``: from pid and time).

        ``getbatch`` calls ``reseed()`` itself when it runs in a process other than the one
        that last seeded it, so forked background workers draw different batches.
        """
        if seed is None:
            seed = (os.getpid(), time.time_ns())
        self.rng = np.random.default_rng(seed)
        self._pid = os.getpid()

    def getbatch(
        self,
        batch_size: int = 1,
        source: str = "train",
        grey_augment_channels: Sequence[int] | None = (),
        warp: bool | float = 0,
        warp_args: dict[str, Any] | None = None,
        ignore_thresh: bool | float = False,
        force_dense: bool = False,
        flip: bool = True,
        ret_info: bool = False,
        **unsupported: Any,
    ) -> tuple[np.ndarray, ...]:
        """Cut a batch of random patches.

        Augmentations (flips and the y/x swap, grey values, warp) apply to training batches
        only; validation batches are plain crops.

        Args:
            batch_size: number of examples.
            source: ``'train'`` (cubes drawn by priority) or ``'valid'`` (drawn uniformly).
            grey_augment_channels: input channels that get the random grey-value transform
                ``clip(a*d + c, 0, 1) ** g`` (a in [0.85, 1.15], c in [-0.15, 0.15],
                g in [0.5, 2]); ``None`` or ``()`` (the default, as in ELEKTRONN2) for none.
            warp: 0/False never, 1/True always, 0 < p < 1 with probability p: a random
                affine warp (rotation about z, small shear/scale).
            warp_args: ``warp_amount`` (default 1: scales rotation and shear),
                ``sample_aniso`` (default True: shear in physical units, z scaled by
                ``aniso_factor``), ``lock_z`` (default True: no shear involving z),
                ``no_x_flip`` (default False: disables x flips and the y/x swap),
                ``perspective`` (accepted, ignored).
            ignore_thresh: skip an example whose fraction of negative (ignore) labels
                exceeds this (0.0: no ignore label allowed); False or None: no check.
            force_dense: labels at every output voxel instead of on the strided output grid.
            flip: random flips of each axis and a random y/x swap (training only).
            ret_info: also return a list with one dict per example: ``cube`` (index into
                ``train_d``/``valid_d``), ``file`` (its raw file), ``start``
                (z, y, x) of the unwarped input patch in the raw cube or ``None`` if warped,
                ``flips``, ``swap_yx``, ``warped``.
            **unsupported: ELEKTRONN2 options not supported here; a truthy value raises.

        Returns:
            ``(data, labels)`` or ``(data, labels, info)``: data float32
            (bs, C, *patch_size); labels int64 (bs, T, *target_shape) with
            target_shape = (patch_size - 2*offsets) // strides, or
            (patch_size - 2*offsets) with ``force_dense``.

        Raises:
            NoValidationData: ``source='valid'`` but no validation cubes.
            ValueError: unknown source, unsupported options or no training cubes.
        """
        _check_unsupported(unsupported)
        warp_args = dict(warp_args or {})
        unknown = sorted(set(warp_args) - set(_WARP_ARGS))
        if unknown:
            raise ValueError(f"warp_args {unknown} are not supported; known: {list(_WARP_ARGS)}")
        if os.getpid() != self._pid:
            self.reseed()
        cubes, lows, prios, names = self._source(source)
        train = source == "train"
        channels = self._grey_channels(grey_augment_channels) if train else ()
        no_x_flip = bool(warp_args.get("no_x_flip", False))

        data, labels, info = [], [], []
        tries = 0
        while len(data) < batch_size:
            k = int(self.rng.choice(len(cubes), p=prios))
            raw, lab = cubes[k]
            do_warp = train and self._decide_warp(warp)
            if do_warp:
                d, t, ex = self._warp_cut(raw, lab, lows[k], warp_args)
            else:
                d, t, ex = self._plain_cut(raw, lab, lows[k])
            check = ignore_thresh is not False and ignore_thresh is not None
            if check and np.mean(t < 0) > float(ignore_thresh):
                tries += 1
                if tries > _IGNORE_TRIES * batch_size:
                    raise DataError(
                        f"no patch with at most {ignore_thresh} ignore labels (<0) in "
                        f"{tries} tries from the {source} cubes; raise ignore_thresh"
                    )
                continue
            flips, swap = (False, False, False), False
            if train and flip:
                d, t, flips, swap = flip_pair(self.rng, d, t, no_x_flip, self._can_swap)
            if channels:
                d = grey_augment(self.rng, d, channels)
            data.append(d)
            labels.append(t)
            info.append({"cube": k, "file": names[k], "flips": flips, "swap_yx": swap, **ex})

        x = np.stack(data).astype(np.float32, copy=False)
        y = np.stack(labels).astype(np.int64, copy=False)
        if not force_dense:
            sz, sy, sx = self.strides
            nz, ny, nx = self.target_ps // self.strides
            y = y[:, :, ::sz, ::sy, ::sx][:, :, :nz, :ny, :nx]
        y = np.ascontiguousarray(y)
        return (x, y, info) if ret_info else (x, y)

    def __repr__(self) -> str:
        return (
            f"{self.t_n_f}-target Data Set with {self.n_f} input channel(s):\n"
            f"#train cubes: {self.n_train_cubes} and #valid cubes: {self.n_valid_cubes}, "
            f"{self.n_labelled_pixel} labelled pixels."
        )

    # -- loading -----------------------------------------------------------------------

    def _check_cube(self, raw: np.ndarray, lab: np.ndarray, d_name: str, l_name: str) -> np.ndarray:
        """Validate one raw/label pair against the others and the model; return the label origin."""
        if self.in_channels is not None and raw.shape[0] != int(self.in_channels):
            raise DataError(
                f"{d_name} has {raw.shape[0]} channel(s) (shape {raw.shape}) but the model "
                f"expects in_channels={self.in_channels}"
            )
        if self.n_f is None:
            self.n_f, self.t_n_f = raw.shape[0], lab.shape[0]
        elif raw.shape[0] != self.n_f or lab.shape[0] != self.t_n_f:
            raise DataError(
                f"{d_name} / {l_name} have {raw.shape[0]} input / {lab.shape[0]} label "
                f"channel(s), the cubes before had {self.n_f} / {self.t_n_f}; all cubes "
                "need the same channel counts"
            )
        rs, ls = np.array(raw.shape[1:]), np.array(lab.shape[1:])
        diff = rs - ls
        if self.label_crop == "centre":
            if (diff < 0).any() or (diff % 2).any():
                raise DataError(
                    f"label cube {l_name} of spatial shape {_tup(ls)} does not fit raw cube "
                    f"{d_name} of spatial shape {_tup(rs)}: with label_crop='centre' labels "
                    "must be the raw cube's size or smaller and centred (an even size "
                    "difference per axis)"
                )
        elif (diff != 0).any() and (diff != 2 * self.offsets).any():
            raise DataError(
                f"label cube {l_name} of spatial shape {_tup(ls)} does not fit raw cube "
                f"{d_name} of spatial shape {_tup(rs)}: labels must have the raw cube's "
                f"shape or be smaller by the model's offsets {_tup(self.offsets)} on each "
                f"side, i.e. {_tup(rs - 2 * self.offsets)}. Fix the label file; if its labels "
                "are a centred crop of another size, set label_crop='centre' in "
                "data_init_kwargs"
            )
        lo = diff // 2
        s_min, s_max = self._start_range(rs, lo, ls, np.zeros((2, 3)))
        if (s_min > s_max).any():
            raise DataError(
                f"model patch {_tup(self.patch_size)} (output {_tup(self.target_ps)}) does "
                f"not fit cube {d_name} of spatial shape {_tup(rs)} with labels "
                f"{_tup(ls)} from {l_name}: use a smaller patch_size or larger cubes"
            )
        return lo

    def _source(self, source: str) -> tuple[list, list, np.ndarray, list]:
        if source == "train":
            if not self.train_d:
                raise ValueError(
                    "No training cubes: every cube is in valid_cubes; leave at least one out"
                )
            return (
                list(zip(self.train_d, self.train_l)),
                self._train_lo,
                self._train_p,
                self._train_names,
            )
        if source == "valid":
            if not self.valid_d:
                raise NoValidationData(
                    "No validation set: no cube is marked for validation; "
                    "set valid_cubes in data_init_kwargs"
                )
            n = len(self.valid_d)
            return (
                list(zip(self.valid_d, self.valid_l)),
                self._valid_lo,
                np.full(n, 1.0 / n),
                self._valid_names,
            )
        raise ValueError(f"source must be 'train' or 'valid', got {source!r}")

    # -- cutting -----------------------------------------------------------------------

    def _start_range(
        self, rs: np.ndarray, lo: np.ndarray, ls: np.ndarray, extent: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive range of integer patch starts whose (warped) input and target stay inside.

        ``extent`` is the extra reach of a warp beyond the unwarped input/target box, per axis.
        """
        ps, off, tps = self.patch_size, self.offsets, self.target_ps
        s_min = np.maximum(extent[0], lo - off + extent[1])
        s_max = np.minimum(rs - ps - extent[0], lo + ls - tps - off - extent[1])
        return np.ceil(s_min).astype(int), np.floor(s_max).astype(int)

    def _plain_cut(
        self, raw: np.ndarray, lab: np.ndarray, lo: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        rs, ls = np.array(raw.shape[1:]), np.array(lab.shape[1:])
        s_min, s_max = self._start_range(rs, lo, ls, np.zeros((2, 3)))
        s = self.rng.integers(s_min, s_max + 1)
        t0 = s + self.offsets - lo
        d = raw[(slice(None), *(slice(a, a + n) for a, n in zip(s, self.patch_size)))]
        t = lab[(slice(None), *(slice(a, a + n) for a, n in zip(t0, self.target_ps)))]
        return d.copy(), t.copy(), {"start": tuple(int(v) for v in s), "warped": False}

    def _warp_cut(
        self, raw: np.ndarray, lab: np.ndarray, lo: np.ndarray, warp_args: dict
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """Affine-warped patch; falls back to a plain cut if no warp fits the cube."""
        rs, ls = np.array(raw.shape[1:]), np.array(lab.shape[1:])
        half_in = (self.patch_size - 1) / 2.0
        half_t = (self.target_ps - 1) / 2.0
        for _ in range(_WARP_TRIES):
            m = random_affine(self.rng, warp_args, self.aniso_factor)
            # +1: linear interpolation reads the next voxel too
            ext_in = np.abs(m) @ half_in - half_in + 1
            ext_t = np.abs(m) @ half_t - half_t + 1
            s_min, s_max = self._start_range(rs, lo, ls, np.stack([ext_in, ext_t]))
            if (s_min <= s_max).all():
                break
        else:
            self.n_failed_warp += 1
            return self._plain_cut(raw, lab, lo)
        s = self.rng.integers(s_min, s_max + 1)
        centre = s + half_in
        d = np.empty((raw.shape[0], *self.patch_size), np.float32)
        box = source_box(centre, np.abs(m) @ half_in + 1, rs)
        cut = raw[(slice(None), *box)]
        for c in range(raw.shape[0]):
            d[c] = warp_sample(cut[c], box, m, centre, self.patch_size, order=1)
        t = np.empty((lab.shape[0], *self.target_ps), lab.dtype)
        centre_l = centre - lo
        box_l = source_box(centre_l, np.abs(m) @ half_t + 1, ls)
        cut = lab[(slice(None), *box_l)]
        for c in range(lab.shape[0]):
            t[c] = warp_sample(cut[c], box_l, m, centre_l, self.target_ps, order=0)
        return d, t, {"start": None, "warped": True}

    def _decide_warp(self, warp: bool | float) -> bool:
        if warp is True or warp == 1:
            return True
        if warp and 0 < float(warp) < 1:
            return bool(self.rng.random() < float(warp))
        return False

    def _grey_channels(self, channels: Sequence[int] | None) -> tuple[int, ...]:
        channels = tuple(int(c) for c in channels or ())
        bad = [c for c in channels if not 0 <= c < self.n_f]
        if bad:
            raise ValueError(
                f"grey_augment_channels {bad} out of range for {self.n_f} input channel(s)"
            )
        return channels


# -- helpers ---------------------------------------------------------------------------


def _model_geometry(node: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = [a for a in ("patch_size", "offsets", "strides") if not hasattr(node, a)]
    if missing:
        raise TypeError(
            f"input_node {type(node).__name__} lacks {missing}: BatchCreatorImage needs a model "
            "with patch_size, offsets and strides (each (z, y, x)) and in_channels"
        )
    geo = [
        np.array(getattr(node, a), dtype=int).reshape(-1)
        for a in ("patch_size", "offsets", "strides")
    ]
    if any(g.shape != (3,) for g in geo):
        raise DataError(
            f"model patch_size {_tup(geo[0])}, offsets {_tup(geo[1])}, strides "
            f"{_tup(geo[2])}: each must have 3 entries (z, y, x)"
        )
    ps, off, st = geo
    if (ps < 1).any() or (off < 0).any() or (st < 1).any() or (ps - 2 * off < 1).any():
        raise DataError(
            f"model patch_size {_tup(ps)}, offsets {_tup(off)}, strides {_tup(st)} are "
            "inconsistent: need patch_size - 2*offsets >= 1 and strides >= 1"
        )
    return ps, off, st


def _tup(a: np.ndarray) -> tuple[int, ...]:
    """Plain-int tuple, so messages read ``(8, 64, 64)`` rather than numpy scalar reprs."""
    return tuple(int(v) for v in a)


def _check_unsupported(kwargs: dict[str, Any]) -> None:
    unknown = sorted(k for k in kwargs if k not in _UNSUPPORTED_GETBATCH)
    if unknown:
        raise ValueError(f"getbatch got unknown argument(s) {unknown}")
    requested = sorted(k for k, v in kwargs.items() if v)
    if requested:
        raise ValueError(
            f"getbatch option(s) {requested} are not supported by VoxelBoard's "
            "BatchCreatorImage; remove them from data_batch_args"
        )
