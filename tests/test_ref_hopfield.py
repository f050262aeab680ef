"""reference.hopfield against a worked example, an independent NumPy implementation, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference.hopfield import energy, hebbian_weights, recall


def patterns(gen: torch.Generator, P: int, N: int) -> torch.Tensor:
    return torch.randint(0, 2, (P, N), generator=gen).double() * 2 - 1


def np_recall(W, b, s0, order, max_sweeps):
    """The lecture's rules written independently, in NumPy."""
    s = s0.copy()
    trace = []
    for _ in range(max_sweeps):
        changed = 0
        for i in order:
            field = sum(W[i, j] * s[j] for j in range(len(s))) + b[i]
            new = 1.0 if field > 0 else -1.0
            changed += new != s[i]
            s[i] = new
            trace.append(-0.5 * s @ W @ s - b @ s)
        if changed == 0:
            break
    return s, np.array(trace)


def test_worked_example_with_ties():
    # x = (1, -1, 1); every field in the first sweep is exactly 0, so each visited unit becomes -1.
    W = hebbian_weights(torch.tensor([[1.0, -1.0, 1.0]]))
    assert W.tolist() == [[0, -1, 1], [-1, 0, -1], [1, -1, 0]]
    s, E = recall(W, torch.zeros(3), torch.ones(3), torch.arange(3), 10)
    assert s.tolist() == [-1, 1, -1]
    assert E.tolist() == [1, 1, 1, 1, -3, -3, -3, -3, -3]


def test_hebbian_is_sum_of_outer_products_without_diagonal():
    X = patterns(torch.Generator().manual_seed(0), 5, 9)
    expected = sum(torch.outer(x, x) for x in X)
    expected.fill_diagonal_(0)
    W = hebbian_weights(X)
    assert torch.equal(W, expected)
    assert torch.equal(W, W.T)
    assert W.dtype == X.dtype
    assert torch.equal(hebbian_weights(X.float()), expected.float())


def test_energy_formula_and_gradient():
    gen = torch.Generator().manual_seed(1)
    W = hebbian_weights(patterns(gen, 4, 7))
    b = torch.randn(7, generator=gen, dtype=torch.float64)
    s = torch.randn(7, generator=gen, dtype=torch.float64)
    E = energy(W, b, s)
    assert E.shape == ()
    assert abs(E - (-0.5 * torch.einsum("i,ij,j->", s, W, s) - (b * s).sum())) < 1e-12
    s_ = s.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(W, b, s_), s_)
    assert torch.allclose(g, -(W @ s) - b, atol=1e-12)  # dE/ds = -W s - b for symmetric W
    Wr = torch.randn(7, 7, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(energy, (Wr.requires_grad_(), b.clone().requires_grad_(), s_))


@pytest.mark.parametrize("seed", range(6))
def test_recall_matches_independent_numpy(seed):
    gen = torch.Generator().manual_seed(seed)
    N, P = 32, 6
    X = patterns(gen, P, N)
    W = hebbian_weights(X)
    b = (
        torch.zeros(N, dtype=torch.float64)
        if seed % 2
        else torch.randn(N, generator=gen, dtype=torch.float64)
    )
    s0 = X[0] * torch.where(torch.rand(N, generator=gen) < 0.25, -1.0, 1.0).double()
    order = torch.randperm(N, generator=gen)
    s, E = recall(W, b, s0, order, 20)
    s_np, E_np = np_recall(W.numpy(), b.numpy(), s0.numpy(), order.tolist(), 20)
    assert np.array_equal(s.numpy(), s_np)
    assert np.allclose(E.numpy(), E_np, atol=1e-10)
    assert (np.diff(E.numpy()) <= 1e-12).all(), "energy increased"
    assert len(E) % N == 0
    assert torch.equal(s0, X[0] * torch.where(s0 == X[0], 1.0, -1.0)), "recall mutated s0"


def test_stored_patterns_are_fixed_points_at_low_load():
    gen = torch.Generator().manual_seed(3)
    X = patterns(gen, 3, 64)
    W = hebbian_weights(X)
    for x in X:
        s, E = recall(W, torch.zeros(64, dtype=torch.float64), x, torch.randperm(64, generator=gen), 5)
        assert torch.equal(s, x)
        assert len(E) == 64 and torch.all(E == energy(W, torch.zeros(64, dtype=torch.float64), x))


def test_max_sweeps_stops_early():
    gen = torch.Generator().manual_seed(4)
    X = patterns(gen, 6, 32)
    W = hebbian_weights(X)
    s0 = patterns(gen, 1, 32)[0]
    _, E = recall(W, torch.zeros(32, dtype=torch.float64), s0, torch.arange(32), 1)
    assert len(E) == 32
