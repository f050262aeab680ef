"""reference.rnn against torch.nn.RNN (copied weights, float64, <= 1e-10), autograd and clip_grad_norm_."""

from __future__ import annotations

import pytest
import torch

from reference.rnn import clip_grad_norm, rnn_backward, rnn_forward, rnn_step

TOL = 1e-10
SHAPES = [(3, 5, 4, 6), (1, 7, 5, 3), (2, 1, 3, 4), (4, 3, 6, 5)]  # (B, T, D, H): B != T, D != H, T = 1


def torch_rnn(D: int, H: int, seed: int) -> tuple[torch.nn.RNN, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    m = torch.nn.RNN(D, H, batch_first=True).double()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.8, 0.8)  # larger than torch's init so every term matters
    w = {
        "W_ih": m.weight_ih_l0.detach().clone(),
        "W_hh": m.weight_hh_l0.detach().clone(),
        "b_ih": m.bias_ih_l0.detach().clone(),
        "b_hh": m.bias_hh_l0.detach().clone(),
    }
    return m, w


def inputs(B: int, T: int, D: int, H: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    return x, h0


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype
    return (a - b).abs().max().item()


@pytest.mark.parametrize("B,T,D,H", SHAPES)
def test_rnn_forward_equals_torch(B, T, D, H):
    m, w = torch_rnn(D, H, seed=T)
    x, h0 = inputs(B, T, D, H, seed=B)
    hs, h_T = rnn_forward(x, h0, **w)
    ref_hs, ref_hT = m(x, h0[None])
    assert hs.shape == (B, T, H) and h_T.shape == (B, H)
    assert maxdiff(hs, ref_hs) <= TOL
    assert maxdiff(h_T, ref_hT[0]) <= TOL


@pytest.mark.parametrize("B,D,H", [(3, 4, 6), (1, 5, 3)])
def test_rnn_step_equals_rnn_cell(B, D, H):
    cell = torch.nn.RNNCell(D, H).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.uniform_(-0.8, 0.8)
    x, h = inputs(B, 1, D, H, seed=0)
    got = rnn_step(x[:, 0], h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert maxdiff(got, cell(x[:, 0], h)) <= TOL


def test_rnn_forward_keeps_float32():
    _, w = torch_rnn(3, 4, seed=0)
    x, h0 = inputs(2, 3, 3, 4, seed=0)
    hs, h_T = rnn_forward(x.float(), h0.float(), **{k: v.float() for k, v in w.items()})
    assert hs.dtype == h_T.dtype == torch.float32
    assert torch.equal(hs[:, -1], h_T)


@pytest.mark.parametrize("B,T,D,H", SHAPES)
def test_rnn_backward_equals_autograd(B, T, D, H):
    _, w = torch_rnn(D, H, seed=1)
    x, h0 = inputs(B, T, D, H, seed=2)
    dhs = torch.randn(B, T, H, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = rnn_backward(dhs, x, h0, **w)
    leaves = {"x": x, "h0": h0, **w}
    leaves = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
    hs, _ = rnn_forward(leaves["x"], leaves["h0"], *(leaves[k] for k in ("W_ih", "W_hh", "b_ih", "b_hh")))
    grads = torch.autograd.grad((hs * dhs).sum(), list(leaves.values()))
    assert set(got) == set(leaves)
    for (name, _), g in zip(leaves.items(), grads, strict=True):
        assert maxdiff(got[name], g) <= TOL, name


def test_rnn_backward_returns_independent_bias_grads():
    _, w = torch_rnn(3, 4, seed=0)
    x, h0 = inputs(2, 3, 3, 4, seed=0)
    got = rnn_backward(torch.ones(2, 3, 4, dtype=torch.float64), x, h0, **w)
    assert torch.equal(got["b_ih"], got["b_hh"])
    assert got["b_ih"].data_ptr() != got["b_hh"].data_ptr()


def test_gradcheck_rnn_step_and_forward():
    _, w = torch_rnn(3, 4, seed=5)
    x, h0 = inputs(2, 3, 3, 4, seed=5)
    args = [t.clone().requires_grad_(True) for t in (x, h0, *w.values())]
    assert torch.autograd.gradcheck(lambda *a: rnn_forward(*a), args)
    step_args = [args[0][:, 0].detach().clone().requires_grad_(True), *args[1:]]
    assert torch.autograd.gradcheck(rnn_step, step_args)


def test_gradcheck_rnn_backward():
    """rnn_backward is itself differentiable (second order), and gradcheck agrees with that."""
    _, w = torch_rnn(2, 3, seed=6)
    x, h0 = inputs(2, 2, 2, 3, seed=6)
    dhs = torch.randn(2, 2, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    args = [t.clone().requires_grad_(True) for t in (dhs, x, h0, *w.values())]

    def flat(*a):
        return tuple(rnn_backward(*a).values())

    assert torch.autograd.gradcheck(flat, args)


def with_grads(shapes: list[tuple[int, ...]], scale: float, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) * scale for s in shapes]


@pytest.mark.parametrize(
    "shapes,max_norm,scale,above",
    [
        ([(3, 4)], 1.0, 3.0, True),
        ([(3, 4)], 50.0, 1.0, False),
        ([(5, 3), (5, 5), (5,), (5,)], 1.5, 2.0, True),
        ([(2, 6), (7,), (3, 2, 2)], 100.0, 1.0, False),
    ],
)
def test_clip_grad_norm_equals_torch(shapes, max_norm, scale, above):
    grads = with_grads(shapes, scale, seed=len(shapes))
    before = [g.clone() for g in grads]
    clipped, total = clip_grad_norm(grads, max_norm)
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    ref_total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    assert maxdiff(total, ref_total) <= TOL
    for c, p in zip(clipped, params, strict=True):
        assert maxdiff(c, p.grad) <= TOL
    for g, b in zip(grads, before, strict=True):  # new tensors: the inputs are unchanged
        assert torch.equal(g, b)
    assert (total.item() > max_norm) == above  # the cases really sit on both sides of the threshold


def test_clip_grad_norm_uses_eps_and_returns_pre_clip_norm():
    g = [torch.tensor([3.0, 4.0], dtype=torch.float64)]
    clipped, total = clip_grad_norm(g, 1.0)
    assert total.item() == 5.0
    assert maxdiff(clipped[0], g[0] / (5.0 + 1e-6)) <= 1e-15


def test_gradcheck_clip_grad_norm():
    grads = [t.requires_grad_(True) for t in with_grads([(2, 3), (4,)], 2.0, seed=9)]
    assert torch.autograd.gradcheck(lambda *g: tuple(clip_grad_norm(list(g), 1.0)[0]), grads)
