"""A displacement fitted in closed form: the orthogonal map that best carries source rows onto their targets.

Orthogonal Procrustes (Schoenemann 1966; the cross-lingual word-vector alignment of Conneau et al. 2018):
`Q = argmin ||S Q - T||_F` over maps with orthonormal columns is `U V^T`, where `S^T T = U Sigma V^T`. An
isometry keeps the source space's own geometry: cosines between displaced vectors are the source's. Measured on
the 1,000-class evaluation (docs/training.md), that is what lets a displaced starter keep the two views of a
class that make `starter_e5` strong in Chinese, which the InfoNCE heads, pulled toward e5's neighbourhoods, lost.

The map ships as an ordinary projector head, so checkpoints, the engine and the paper's heads need nothing new:
`Linear(d_in, hidden)` holds `[Q^T; -Q^T; 0]`, ReLU keeps both halves' positive parts, `Linear(hidden, d_out)`
holds `[I, -I, 0]` (relu(z) - relu(-z) = z), and both BatchNorms are identities in eval mode (mean 0, variance
1 - eps). The head's L2 normalisation is then a no-op on unit inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from bonds.projector import ProjectorHead


def orthogonal_map(source_nd: np.ndarray, target_nd: np.ndarray) -> np.ndarray:
    """`(d_in, d_out)` map with orthonormal columns (rows, when d_in < d_out) minimising ||S Q - T||_F."""
    if source_nd.shape[0] != target_nd.shape[0] or source_nd.shape[0] < 2:
        raise ValueError(f"Procrustes needs two or more pairs of rows, got {source_nd.shape[0]} sources and "
                         f"{target_nd.shape[0]} targets")
    u, _, vt = np.linalg.svd(source_nd.astype(np.float64).T @ target_nd.astype(np.float64), full_matrices=False)
    return (u @ vt).astype(np.float32)


def linear_head(q_io: np.ndarray, hidden: int) -> ProjectorHead:
    """A `ProjectorHead` (eval mode) computing `n(x Q)` exactly, for `hidden >= 2 d_out`."""
    d_in, d_out = q_io.shape
    if hidden < 2 * d_out:
        raise ValueError(f"a Procrustes head needs a hidden width of at least 2 x {d_out} = {2 * d_out} (both signs "
                         f"of each output), got {hidden}")
    head = ProjectorHead(d_in, d_out, hidden)
    q = torch.from_numpy(q_io)
    eye = torch.eye(d_out)
    with torch.no_grad():
        first, second = head.mlps[0], head.mlps[3]
        first.weight.zero_()
        first.weight[:d_out] = q.T
        first.weight[d_out : 2 * d_out] = -q.T
        first.bias.zero_()
        second.weight.zero_()
        second.weight[:, :d_out] = eye
        second.weight[:, d_out : 2 * d_out] = -eye
        second.bias.zero_()
        for norm in (head.mlps[1], head.mlps[4]):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
    return head.eval()
