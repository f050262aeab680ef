"""Hopfield network: Hebbian storage, energy, and asynchronous recall, pinned to the lecture's rules.

States and patterns are ±1 vectors of N units. The rules graded (and nothing else):

    W = sum_p x_p x_p^T  with  W_ii = 0                         (no 1/N or 1/P scaling)
    E(s) = -1/2 s^T W s - b^T s
    h_i = sum_j W_ij s_j + b_i;   s_i <- +1 if h_i > 0 else -1    (a zero field gives -1: no sign(0) = 0)

Recall is asynchronous: one sweep visits the units in the given `order` (a permutation of 0..N-1), updating
one unit at a time with the current state; the energy is recorded after every visit. Sweeps repeat until a
whole sweep changes nothing (that sweep is included) or `max_sweeps` sweeps have run. With a symmetric W and
a zero diagonal each visit changes E by -(s_i' - s_i) h_i <= 0, so the energy trace never increases.

Shapes: P patterns, N units.


Self-check: seqgrade check hopfield hopfield.py
"""

from __future__ import annotations
import torch
from torch import Tensor


def hebbian_weights(patterns: Tensor) -> Tensor:
    """Hebbian weights W = sum_p x_p x_p^T with a zero diagonal.

    Shapes: patterns (P, N) of ±1 -> W (N, N), symmetric, same dtype as patterns.
    """
    raise NotImplementedError("hebbian_weights: your code here")


def energy(W: Tensor, b: Tensor, s: Tensor) -> Tensor:
    """E(s) = -1/2 s^T W s - b^T s.

    Shapes: W (N, N), b (N,), s (N,) -> E () (a 0-dim tensor).
    """
    raise NotImplementedError("energy: your code here")


def recall(W: Tensor, b: Tensor, s0: Tensor, order: Tensor, max_sweeps: int) -> tuple[Tensor, Tensor]:
    """Asynchronous recall from s0, sweeping the units in `order` until a sweep changes nothing.

    Shapes: W (N, N), b (N,), s0 (N,) of ±1, order (N,) int64 (a permutation of 0..N-1), max_sweeps >= 1
    -> s (N,) the final state (dtype of s0), energies (n_sweeps * N,) E after every visit (dtype of W).
    """
    raise NotImplementedError("recall: your code here")
