"""Blockwise connected components: blocks, their faces, and the merge across them.

Pure functions of arrays (``trainer.segment_volume`` does the reading and writing):

* ``plan_blocks``: the blocks of a volume, in C order, and their grid.
* ``block_shape_for``: the largest block (a multiple of 64 voxels per axis where it can be)
  whose working set fits a memory budget.
* ``local_components``: a block's components (``cc3d``, 6 face neighbours), their count and
  the labels on its six faces.
* ``merge_faces``: one label table for the whole volume. A component of block ``i`` with
  local id ``j`` has provisional id ``base[i] + j``; two provisional ids are joined where
  foreground voxels touch across a block face (union-find as a sparse graph's connected
  components), and the joined sets are numbered 1..n in the order of their first block.
* ``block_table``: block ``i``'s slice of that table, indexed by local id.

Example:
    >>> import numpy as np
    >>> mask = np.ones((4, 4, 4), bool)
    >>> blocks, grid = plan_blocks(mask.shape, (2, 4, 4))
    >>> parts = [local_components(mask[b]) for b in blocks]
    >>> table = merge_faces(grid, [p.count for p in parts], [p.faces for p in parts])
    >>> table.tolist()
    [0, 1, 1]
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import cc3d
import numpy as np

__all__ = [
    "BlockFaces",
    "BlockComponents",
    "block_shape_for",
    "block_table",
    "grow_box",
    "local_components",
    "merge_faces",
    "plan_blocks",
]

#: block edges are rounded down to multiples of this (the output's chunk edge)
ALIGN = 64


def plan_blocks(
    shape: Sequence[int], block: Sequence[int]
) -> tuple[list[tuple[slice, ...]], tuple[int, ...]]:
    """The blocks of a ``shape`` volume cut into ``block``-sized pieces (the last ones smaller),
    in C order, and the grid's shape (blocks per axis).

    Raises:
        ValueError: a block edge below 1 or a shape of another rank.
    """
    if len(shape) != len(block) or any(int(b) < 1 for b in block):
        raise ValueError(f"block {tuple(block)}: expected {len(shape)} edges of at least 1 voxel")
    grid = tuple(max(-(-int(n) // int(b)), 1) for n, b in zip(shape, block))
    blocks = [
        tuple(slice(k * b, min((k + 1) * b, n)) for k, b, n in zip(pos, block, shape))
        for pos in itertools.product(*(range(g) for g in grid))
    ]
    return blocks, grid


def grow_box(box: Sequence[slice], halo: int, shape: Sequence[int]) -> tuple[slice, ...]:
    """``box`` grown by ``halo`` voxels on every side, clipped to ``shape``."""
    return tuple(slice(max(s.start - halo, 0), min(s.stop + halo, n)) for s, n in zip(box, shape))


def block_shape_for(
    shape: Sequence[int], budget_bytes: float, bytes_per_voxel: float, halo: int = 0
) -> tuple[int, int, int]:
    """The largest block whose working set, ``bytes_per_voxel`` per voxel of the block grown
    by ``halo`` on every side, fits ``budget_bytes``.

    Axes are sized from the shortest: an axis the budget covers whole is taken whole, and
    what it leaves goes to the others; edges cut inside the volume are rounded down to
    multiples of ``ALIGN`` (the output's chunk edge) where at least one fits. A volume that
    fits the budget is one block.

    Raises:
        ValueError: the budget does not hold even a block of ``ALIGN // 4`` voxels a side.
    """
    voxels = budget_bytes / bytes_per_voxel
    edges = [0, 0, 0]
    for left, a in zip((3, 2, 1), sorted(range(3), key=lambda k: shape[k])):
        n = int(shape[a])
        e = int(voxels ** (1 / left) + 1e-9) - 2 * halo
        if e >= n:
            e = n
        elif e >= ALIGN:
            e -= e % ALIGN
        if e < min(ALIGN // 4, n):
            need = bytes_per_voxel * (ALIGN // 4 + 2 * halo) ** 3
            raise ValueError(
                f"a memory budget of {budget_bytes / 2**30:.3g} GB holds no block: it needs "
                f"at least {need / 2**30:.3g} GB here; give a larger --memory-gb"
            )
        edges[a] = e
        voxels /= min(e + 2 * halo, n)
    return tuple(edges)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class BlockFaces:
    """The local labels on a block's six faces: ``low[a]`` its first plane along axis ``a``,
    ``high[a]`` its last."""

    low: tuple[np.ndarray, np.ndarray, np.ndarray]
    high: tuple[np.ndarray, np.ndarray, np.ndarray]

    def as_arrays(self) -> dict[str, np.ndarray]:
        """``{'low0': ..., 'high2': ...}``, e.g. for ``numpy.savez``."""
        out = {f"low{a}": f for a, f in enumerate(self.low)}
        out.update({f"high{a}": f for a, f in enumerate(self.high)})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> BlockFaces:
        """The inverse of ``as_arrays``."""
        return cls(
            tuple(np.asarray(arrays[f"low{a}"]) for a in range(3)),  # type: ignore[arg-type]
            tuple(np.asarray(arrays[f"high{a}"]) for a in range(3)),  # type: ignore[arg-type]
        )


@dataclasses.dataclass(frozen=True)
class BlockComponents:
    """``local_components``'s answer: uint32 labels 1..count (0 outside), their count, faces."""

    labels: np.ndarray
    count: int
    faces: BlockFaces


def local_components(mask: np.ndarray) -> BlockComponents:
    """The 6-connected components of one block's boolean ``mask``, numbered in scan order
    (``cc3d``, as ``trainer.segmentation.label_components``)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ValueError(f"mask has shape {mask.shape}: expected a (z, y, x) block")
    labels = cc3d.connected_components(mask, connectivity=6, out_dtype=np.uint32)
    count = int(labels.max()) if labels.size else 0
    low = tuple(np.ascontiguousarray(np.take(labels, 0, axis=a)) for a in range(3))
    high = tuple(np.ascontiguousarray(np.take(labels, -1, axis=a)) for a in range(3))
    return BlockComponents(labels, count, BlockFaces(low, high))  # type: ignore[arg-type]


def _bases(counts: Sequence[int]) -> np.ndarray:
    """``base[i]``: provisional id of block ``i``'s local id 0 (its ids are base + 1..count)."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))])


def merge_faces(
    grid: Sequence[int], counts: Sequence[int], faces: Sequence[BlockFaces] | object
) -> np.ndarray:
    """The whole volume's label table: ``table[base[i] + j]`` is the final id of block ``i``'s
    local component ``j`` (``table[0] == 0``).

    Args:
        grid: blocks per axis (``plan_blocks``).
        counts: components per block, in C order.
        faces: ``faces[i]`` the ``BlockFaces`` of block ``i`` (any indexable: a lazy loader
            keeps only two blocks' faces in memory at a time).

    Returns:
        uint64, ``sum(counts) + 1`` entries: 0, then ids 1..n numbered by their smallest
        provisional id.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    base = _bases(counts)
    total = int(base[-1])
    strides = np.cumprod([1, *reversed(list(grid[1:]))])[::-1]
    pairs: list[np.ndarray] = []
    for i, pos in enumerate(itertools.product(*(range(g) for g in grid))):
        mine = None
        for a in range(3):
            if pos[a] + 1 >= grid[a]:
                continue
            j = i + int(strides[a])
            mine = mine or faces[i]  # type: ignore[index]
            hi, lo = mine.high[a], faces[j].low[a]  # type: ignore[index]
            touch = (hi != 0) & (lo != 0)
            if touch.any():
                p = np.stack([hi[touch] + base[i], lo[touch] + base[j]], axis=1).astype(np.int64)
                pairs.append(np.unique(p, axis=0))
    edges = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    graph = coo_matrix(
        (np.ones(len(edges), np.bool_), (edges[:, 0], edges[:, 1])), shape=(total + 1,) * 2
    )
    # node 0 (background) has no edge: it is component 0, and components are numbered in the
    # order of their smallest node
    _, comp = connected_components(graph, directed=False)
    return comp.astype(np.uint64)


def block_table(table: np.ndarray, counts: Sequence[int], i: int) -> np.ndarray:
    """Block ``i``'s part of ``merge_faces``'s table, indexed by its local ids (0 -> 0)."""
    base = int(np.sum(np.asarray(counts[:i], np.int64)))
    out = np.array(table[base : base + int(counts[i]) + 1], np.uint64)
    out[0] = 0
    return out
