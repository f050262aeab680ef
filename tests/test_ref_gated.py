"""reference.gated vs torch.nn.LSTM/GRU and their cells (copied weights, float64, <= 1e-10), gradcheck."""

from __future__ import annotations

import pytest
import torch

from reference.gated import gru_forward, gru_step, lstm_forward, lstm_step

TOL = 1e-10
SHAPES = [(3, 5, 4, 6), (1, 7, 5, 3), (2, 1, 3, 4), (4, 3, 6, 5)]  # (B, T, D, H): B != T, D != H, T = 1


def weights(m: torch.nn.Module, suffix: str = "_l0") -> dict[str, torch.Tensor]:
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.8, 0.8)  # larger than torch's init so every term matters
    names = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
    return {k: getattr(m, v + suffix).detach().clone() for k, v in names.items()}


def inputs(B: int, T: int, D: int, H: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    c0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    return x, h0, c0


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype
    return (a - b).abs().max().item()


@pytest.mark.parametrize("B,T,D,H", SHAPES)
def test_lstm_forward_equals_torch(B, T, D, H):
    torch.manual_seed(T)
    m = torch.nn.LSTM(D, H, batch_first=True).double()
    w = weights(m)
    x, h0, c0 = inputs(B, T, D, H, seed=B)
    hs, (h_T, c_T) = lstm_forward(x, h0, c0, **w)
    ref_hs, (ref_h, ref_c) = m(x, (h0[None], c0[None]))
    assert maxdiff(hs, ref_hs) <= TOL
    assert maxdiff(h_T, ref_h[0]) <= TOL
    assert maxdiff(c_T, ref_c[0]) <= TOL


@pytest.mark.parametrize("B,T,D,H", SHAPES)
def test_gru_forward_equals_torch(B, T, D, H):
    torch.manual_seed(T)
    m = torch.nn.GRU(D, H, batch_first=True).double()
    w = weights(m)
    x, h0, _ = inputs(B, T, D, H, seed=B)
    hs, h_T = gru_forward(x, h0, **w)
    ref_hs, ref_h = m(x, h0[None])
    assert maxdiff(hs, ref_hs) <= TOL
    assert maxdiff(h_T, ref_h[0]) <= TOL


@pytest.mark.parametrize("B,D,H", [(3, 4, 6), (1, 5, 3)])
def test_steps_equal_torch_cells(B, D, H):
    x, h, c = inputs(B, 1, D, H, seed=1)
    lstm = torch.nn.LSTMCell(D, H).double()
    w = weights(lstm, suffix="")
    h_t, c_t = lstm_step(x[:, 0], h, c, **w)
    ref_h, ref_c = lstm(x[:, 0], (h, c))
    assert maxdiff(h_t, ref_h) <= TOL and maxdiff(c_t, ref_c) <= TOL
    gru = torch.nn.GRUCell(D, H).double()
    w = weights(gru, suffix="")
    assert maxdiff(gru_step(x[:, 0], h, **w), gru(x[:, 0], h)) <= TOL


def test_forwards_keep_float32():
    m = torch.nn.LSTM(3, 4, batch_first=True)
    w = {k: v.float() for k, v in weights(m).items()}
    x, h0, c0 = (t.float() for t in inputs(2, 3, 3, 4, seed=0))
    hs, (h_T, c_T) = lstm_forward(x, h0, c0, **w)
    assert hs.dtype == h_T.dtype == c_T.dtype == torch.float32
    g = {k: v.float() for k, v in weights(torch.nn.GRU(3, 4, batch_first=True)).items()}
    hs, h_T = gru_forward(x, h0, **g)
    assert hs.dtype == h_T.dtype == torch.float32
    assert torch.equal(hs[:, -1], h_T)


def test_gradcheck_lstm():
    w = weights(torch.nn.LSTM(3, 2, batch_first=True).double())
    x, h0, c0 = inputs(2, 3, 3, 2, seed=3)
    args = [t.clone().requires_grad_(True) for t in (x, h0, c0, *w.values())]

    def flat(*a):
        hs, (h, c) = lstm_forward(*a)
        return hs, h, c

    assert torch.autograd.gradcheck(flat, args)
    step_args = [args[0][:, 0].detach().clone().requires_grad_(True), *args[1:]]
    assert torch.autograd.gradcheck(lstm_step, step_args)


def test_gradcheck_gru():
    w = weights(torch.nn.GRU(3, 2, batch_first=True).double())
    x, h0, _ = inputs(2, 3, 3, 2, seed=4)
    args = [t.clone().requires_grad_(True) for t in (x, h0, *w.values())]
    assert torch.autograd.gradcheck(gru_forward, args)
    step_args = [args[0][:, 0].detach().clone().requires_grad_(True), *args[1:]]
    assert torch.autograd.gradcheck(gru_step, step_args)
