"""reference.sequences against torch.nn.RNN/GRU/LSTM (multi-layer, bidirectional, packed) in float64."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from reference.sequences import GATES, bidirectional_forward, classify, stacked_forward

MODULES = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
NAMES = ("W_ih", "W_hh", "b_ih", "b_hh")
TORCH_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def module_and_layers(cell: str, D: int, H: int, L: int, bidirectional: bool, seed: int):
    torch.manual_seed(seed)
    m = MODULES[cell](D, H, num_layers=L, batch_first=True, bidirectional=bidirectional).double()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.7, 0.7)  # larger than torch's init so every term matters
    layers = []
    for k in range(L):
        w = {n: getattr(m, f"{t}_l{k}").detach().clone() for n, t in zip(NAMES, TORCH_NAMES, strict=True)}
        if bidirectional:
            w |= {
                n + "_reverse": getattr(m, f"{t}_l{k}_reverse").detach().clone()
                for n, t in zip(NAMES, TORCH_NAMES, strict=True)
            }
        layers.append(w)
    return m, layers


def state(cell: str, n: int, B: int, H: int, gen: torch.Generator):
    h = torch.randn(n, B, H, generator=gen, dtype=torch.float64)
    return (h, torch.randn(n, B, H, generator=gen, dtype=torch.float64)) if cell == "lstm" else h


def assert_close(a, b, tol=1e-10):
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            assert_close(x, y, tol)
        return
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_stacked_forward_equals_torch(cell, L):
    B, T, D, H = 3, 5, 4, 6
    m, layers = module_and_layers(cell, D, H, L, False, seed=L)
    gen = torch.Generator().manual_seed(10 + L)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    s0 = state(cell, L, B, H, gen)
    out, s_n = stacked_forward(cell, x, s0, layers)
    want_out, want_s = m(x, s0)
    assert_close(out, want_out)
    assert_close(s_n, want_s)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_bidirectional_forward_equals_packed_torch(cell, L):
    B, T, D, H = 5, 7, 3, 4
    m, layers = module_and_layers(cell, D, H, L, True, seed=100 + L)
    gen = torch.Generator().manual_seed(20 + L)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([3, 7, 1, 5, 6])  # unsorted, one full, one of length 1
    for b in range(B):
        x[b, lengths[b] :] = 50.0 * torch.randn(
            T - lengths[b], D, generator=gen, dtype=torch.float64
        )  # loud padding
    s0 = state(cell, 2 * L, B, H, gen)
    out, s_n = bidirectional_forward(cell, x, lengths, s0, layers)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    want_packed, want_s = m(packed, s0)
    want_out, _ = pad_packed_sequence(want_packed, batch_first=True, total_length=T)
    assert_close(out, want_out)
    assert_close(s_n, want_s)
    for b in range(B):
        assert (out[b, lengths[b] :] == 0).all()


def test_bidirectional_full_lengths_equals_unpacked_torch():
    B, T, D, H, L = 2, 4, 3, 5, 2
    m, layers = module_and_layers("gru", D, H, L, True, seed=7)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    s0 = state("gru", 2 * L, B, H, gen)
    out, h_n = bidirectional_forward("gru", x, torch.full((B,), T), s0, layers)
    want_out, want_h = m(x, s0)
    assert_close(out, want_out)
    assert_close(h_n, want_h)


def test_stacked_forward_equals_bidirectional_code_path_per_layer():
    """The layers really chain: layer 1 of a stacked pass equals a 1-layer pass over layer 0's outputs."""
    B, T, D, H = 2, 4, 3, 5
    _, layers = module_and_layers("lstm", D, H, 2, False, seed=3)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    s0 = state("lstm", 2, B, H, gen)
    out, (h_n, c_n) = stacked_forward("lstm", x, s0, layers)
    mid, _ = stacked_forward("lstm", x, (s0[0][:1], s0[1][:1]), layers[:1])
    top, (h1, c1) = stacked_forward("lstm", mid, (s0[0][1:], s0[1][1:]), layers[1:])
    assert_close(out, top, 0.0)
    assert_close(h_n[1:], h1, 0.0)


def test_classify_equals_torch_pipeline_and_ignores_padding():
    B, T, V, E, H, L, C = 4, 6, 11, 5, 4, 2, 3
    m, layers = module_and_layers("gru", E, H, L, True, seed=5)
    gen = torch.Generator().manual_seed(5)
    emb = torch.randn(V, E, generator=gen, dtype=torch.float64)
    W_out = torch.randn(C, 2 * H, generator=gen, dtype=torch.float64)
    b_out = torch.randn(C, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([2, 6, 4, 1])
    tokens = torch.randint(0, V, (B, T), generator=gen)
    logits = classify(tokens, lengths, emb, layers, W_out, b_out)
    packed = pack_padded_sequence(
        torch.nn.functional.embedding(tokens, emb), lengths, batch_first=True, enforce_sorted=False
    )
    _, h_n = m(packed)
    want = torch.nn.functional.linear(torch.cat([h_n[-2], h_n[-1]], dim=1), W_out, b_out)
    assert_close(logits, want)
    other = torch.cat([tokens, torch.randint(0, V, (B, 3), generator=gen)], dim=1)
    for b in range(B):
        other[b, lengths[b] :] = torch.randint(0, V, (T + 3 - lengths[b],), generator=gen)
    assert_close(classify(other, lengths, emb, layers, W_out, b_out), logits, 1e-12)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_gradcheck(cell):
    B, T, D, H, L = 3, 4, 2, 3, 2
    _, layers = module_and_layers(cell, D, H, L, True, seed=9)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(B, T, D, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 * L, B, H, generator=gen, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 4, 1])
    W = layers[1]["W_hh_reverse"].clone().requires_grad_(True)

    def f(x, h0, W):
        ls = [layers[0], {**layers[1], "W_hh_reverse": W}]
        s0 = (h0, h0 * 0.5) if cell == "lstm" else h0
        out, s_n = bidirectional_forward(cell, x, lengths, s0, ls)
        return out, s_n[0] if cell == "lstm" else s_n

    assert torch.autograd.gradcheck(f, (x, h0, W))
    _, stacked = module_and_layers(cell, D, H, L, False, seed=9)
    h0s = torch.randn(L, B, H, generator=gen, dtype=torch.float64, requires_grad=True)

    def g(x, h0):
        return stacked_forward(cell, x, (h0, h0.tanh()) if cell == "lstm" else h0, stacked)[0]

    assert torch.autograd.gradcheck(g, (x, h0s))
    assert GATES[cell] * H == layers[0]["W_ih"].shape[0]
