"""Graphs on the data grid for the graph blocks: a ring (Lorenz-96) and k nearest neighbours on the sphere.

Both give :class:`~hybrid_eda.layers.blocks.GridGraph` edges ``src -> dst`` (every node its own neighbour) with
the same three edge attributes, so one model runs on either: the edge length and its east and north components,
in units of the grid spacing (ring: 1 between neighbours; sphere: the median distance to the nearest other point).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from hybrid_eda.errors import UserInputError
from hybrid_eda.layers.blocks import GridGraph

#: Edge attributes of both graphs: length, east component, north component (grid spacings).
EDGE_ATTRIBUTES = ("length", "east", "north")


def ring_graph(n_points: int, half_width: int = 2) -> GridGraph:
    """Periodic 1-D grid: node ``i`` receives from ``i - w .. i + w`` (itself included), ``w = half_width``.

    Edge attributes ``[|o|, o, 0]`` for the offset ``o = src - dst`` (wrapped to ``-w .. w``).
    """
    if n_points < 1 or half_width < 0 or 2 * half_width + 1 > n_points:
        width = 2 * half_width + 1
        msg = f"a ring of {n_points} points cannot have {width} distinct neighbours (half_width={half_width})"
        raise UserInputError(msg)
    offsets = torch.arange(-half_width, half_width + 1)  # [2w + 1]
    dst = torch.arange(n_points).repeat_interleave(offsets.numel())
    offset = offsets.repeat(n_points).float()
    src = (dst + offsets.repeat(n_points)) % n_points
    edge_attr = torch.stack([offset.abs(), offset, torch.zeros_like(offset)], dim=-1)
    return GridGraph(src=src, dst=dst, edge_attr=edge_attr, n_nodes=n_points)


def sphere_graph(latitudes: np.ndarray, longitudes: np.ndarray, k: int = 9) -> GridGraph:
    """Each point receives from its ``k`` nearest points on the sphere (itself included).

    Parameters
    ----------
    latitudes, longitudes : np.ndarray
        ``[grid]`` in degrees (e.g. a :class:`~hybrid_eda.synthetic.grids.GaussianGrid`'s).
    k : int
        Neighbours per point, itself included.
    """
    lat, lon = np.radians(np.asarray(latitudes, dtype=np.float64)), np.radians(np.asarray(longitudes, np.float64))
    if lat.shape != lon.shape or lat.ndim != 1 or not 1 <= k <= lat.size:
        msg = f"sphere_graph needs latitudes, longitudes [grid] and 1 <= k <= grid; got {lat.shape}, {lon.shape}, {k=}"
        raise UserInputError(msg)
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)  # [grid, 3]
    _, nearest = cKDTree(xyz).query(xyz, k=k)  # [grid, k]
    nearest = nearest.reshape(lat.size, k)
    dst = np.repeat(np.arange(lat.size), k)
    src = nearest.reshape(-1)
    displacement = xyz[src] - xyz[dst]  # [edges, 3]
    east = np.stack([-np.sin(lon), np.cos(lon), np.zeros_like(lon)], axis=1)[dst]
    north = np.stack([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)], axis=1)[dst]
    length = np.linalg.norm(displacement, axis=1)
    spacing = float(np.median(length[length > 0])) if (length > 0).any() else 1.0
    attr = (
        np.stack([length, np.sum(displacement * east, axis=1), np.sum(displacement * north, axis=1)], axis=1) / spacing
    )
    return GridGraph(
        src=torch.from_numpy(src).long(),
        dst=torch.from_numpy(dst).long(),
        edge_attr=torch.from_numpy(attr).float(),
        n_nodes=int(lat.size),
    )
