"""Synthetic photons: where they land, what they deposit, and the record of it.

Photons arrive at a mean ``occupancy`` per pixel per frame (Poisson). Each
deposits its ``energy`` (keV) in one pixel or shares it, as charge sharing
does, over a small cluster: a pair (the seed and the pixel to its right) or
a 2x2 square (seed at the top left). The seed keeps the largest share.
Clusters never overlap within a frame, so every recorded photon is exactly
what the frame holds. Everything for a step is drawn at once (vectorised).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PHOTON_DTYPE", "CLUSTER_SIZES", "cluster_probabilities", "draw_photons", "deposit"]

#: One recorded photon: the frame event (index in the step), its seed pixel, energy, cluster.
PHOTON_DTYPE = np.dtype([("event", np.int64), ("module", np.int32), ("row", np.int32), ("col", np.int32),
                         ("energy", np.float32), ("size", np.int8), ("seed_fraction", np.float32)])
#: Cluster sizes, in the order of ``clusters`` probabilities: single pixel, pair, 2x2.
CLUSTER_SIZES = (1, 2, 4)
#: Pixel offsets ``(row, col)`` of each cluster size, seed first.
_FOOTPRINT = {1: [(0, 0)], 2: [(0, 0), (0, 1)], 4: [(0, 0), (0, 1), (1, 0), (1, 1)]}


def _shares(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """Energy fractions ``[n, 4]`` (seed first, largest; zeros past the cluster size)."""
    n = len(sizes)
    out = np.zeros((n, 4), np.float32)
    out[sizes == 1, 0] = 1
    pair = sizes == 2
    seed = rng.uniform(0.5, 0.9, pair.sum()).astype(np.float32)
    out[pair, 0], out[pair, 1] = seed, 1 - seed
    quad = sizes == 4
    if quad.any():
        f = -np.sort(-rng.dirichlet(np.ones(4), quad.sum()), axis=1)  # seed keeps the largest share
        out[quad] = f
    return out


def cluster_probabilities(clusters) -> np.ndarray:
    """Check and normalise the probabilities of 1-, 2- and 4-pixel photons."""
    p = np.asarray(clusters, float)
    if p.shape != (3,) or not np.all(p >= 0) or p.sum() <= 0:
        raise ValueError(f"clusters must be 3 non-negative probabilities (1, 2, 4 pixels); got {clusters}")
    return p / p.sum()


def draw_photons(rng: np.random.Generator, frame_events: np.ndarray, shape: tuple, occupancy: float,
                 energy: float, clusters=(1.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Draw the photons of a step's frames.

    Parameters
    ----------
    rng : numpy.random.Generator
    frame_events : numpy.ndarray
        Indices (in the step) of the events that hold a frame.
    shape : tuple
        Frame ``(module, row, col)``.
    occupancy : float
        Mean photons per pixel per frame.
    energy : float
        Photon energy, keV.
    clusters : sequence of 3 floats
        Probabilities of a photon depositing in 1, 2 or 4 pixels.

    Returns
    -------
    photons : numpy.ndarray
        ``PHOTON_DTYPE`` records, sorted by event.
    shares : numpy.ndarray
        float32 ``[n, 4]`` energy fractions of each photon's footprint pixels.
    """
    p = cluster_probabilities(clusters)
    if occupancy < 0:
        raise ValueError(f"occupancy must be non-negative, not {occupancy}")
    m, rows, cols = shape
    pixels = m * rows * cols
    counts = rng.poisson(occupancy * pixels, len(frame_events))
    n = int(counts.sum())
    event = np.repeat(np.asarray(frame_events, np.int64), counts)
    sizes = np.asarray(CLUSTER_SIZES, np.int8)[rng.choice(3, n, p=p)]
    if (rows < 2 and (sizes == 4).any()) or (cols < 2 and (sizes > 1).any()):
        sizes[:] = 1  # a 1-row (or 1-column) detector only sees single pixels
    # seeds where the whole footprint fits
    wide, tall = sizes > 1, sizes == 4
    mod = rng.integers(0, m, n)
    row = (rng.random(n) * (rows - tall)).astype(np.int64)
    col = (rng.random(n) * (cols - wide)).astype(np.int64)
    shares = _shares(rng, sizes)
    # drop photons whose footprints overlap another's in the same frame
    fp_pixel, fp_owner = _footprints(event, mod, row, col, sizes, shape)
    uniq, inverse, hits = np.unique(fp_pixel, return_inverse=True, return_counts=True)
    clash = np.zeros(n, bool)
    clash[fp_owner[hits[inverse] > 1]] = True
    keep = ~clash
    photons = np.empty(int(keep.sum()), PHOTON_DTYPE)
    photons["event"], photons["module"] = event[keep], mod[keep]
    photons["row"], photons["col"] = row[keep], col[keep]
    photons["energy"], photons["size"] = energy, sizes[keep]
    photons["seed_fraction"] = shares[keep, 0]
    return photons, shares[keep]


def _footprints(event, mod, row, col, sizes, shape):
    """Flat run-unique pixel ids of every footprint pixel, and the photon owning each."""
    m, rows, cols = shape
    ids, owners = [], []
    for k in range(4):
        has = sizes > k
        dr = np.array([_FOOTPRINT[s][k][0] if s > k else 0 for s in CLUSTER_SIZES])
        dc = np.array([_FOOTPRINT[s][k][1] if s > k else 0 for s in CLUSTER_SIZES])
        which = np.searchsorted(CLUSTER_SIZES, sizes[has])
        r, c = row[has] + dr[which], col[has] + dc[which]
        ids.append(((event[has] * m + mod[has]) * rows + r) * cols + c)
        owners.append(np.flatnonzero(has))
    return np.concatenate(ids), np.concatenate(owners)


def deposit(photons: np.ndarray, shares: np.ndarray, event: int, shape: tuple) -> np.ndarray | None:
    """Return the energy (keV, float32 ``shape``) the photons of ``event`` deposit, or None when none."""
    lo, hi = np.searchsorted(photons["event"], [event, event + 1])  # photons are sorted by event
    if lo == hi:
        return None
    sel = np.arange(lo, hi)
    out = np.zeros(shape, np.float32)
    p = photons[sel]
    ev = np.zeros(len(p), np.int64)
    ids, owners = _footprints(ev, p["module"].astype(np.int64), p["row"].astype(np.int64),
                              p["col"].astype(np.int64), p["size"], shape)
    # owner k's j-th footprint pixel gets shares[k, j]; _footprints lists pixel j for all owners, j = 0..3
    j = np.concatenate([np.zeros((p["size"] > k).sum(), np.int64) + k for k in range(4)])
    np.add.at(out.reshape(-1), ids, p["energy"][owners] * shares[sel][owners, j])
    return out
