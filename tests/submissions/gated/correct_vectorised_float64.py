"""Correct: input projections of all steps at once with einsum, torch.split into gates, float64 inside
and cast back to the input dtype, hs preallocated with new_zeros."""

import torch


def lstm_step(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    dt = x_t.dtype
    x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh = (
        v.double() for v in (x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh)
    )
    gates = torch.einsum("bd,gd->bg", x_t, W_ih) + torch.einsum("bh,gh->bg", h_prev, W_hh) + b_ih + b_hh
    i, f, g, o = torch.split(gates, h_prev.shape[1], dim=1)
    c = f.sigmoid() * c_prev + i.sigmoid() * g.tanh()
    h = o.sigmoid() * c.tanh()
    return h.to(dt), c.to(dt)


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    B, T, _ = x.shape
    H = h0.shape[1]
    xg = torch.einsum("btd,gd->btg", x, W_ih) + b_ih + b_hh  # (B, T, 4H)
    hs = x.new_zeros(B, T, H)
    h, c = h0, c0
    for t in range(T):
        i, f, g, o = (xg[:, t] + h @ W_hh.T).split(H, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs[:, t] = h
    return hs, (h, c)


def gru_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    gi = torch.einsum("bd,gd->bg", x_t.double(), W_ih.double()) + b_ih.double()
    gh = torch.einsum("bh,gh->bg", h_prev.double(), W_hh.double()) + b_hh.double()
    i_r, i_z, i_n = gi.split(H, dim=1)
    h_r, h_z, h_n = gh.split(H, dim=1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return ((1 - z) * n + z * h_prev.double()).to(x_t.dtype)


def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    H = h0.shape[1]
    gi_all = torch.einsum("btd,gd->btg", x, W_ih) + b_ih  # (B, T, 3H)
    h, hs = h0, []
    for gi in gi_all.unbind(1):
        i_r, i_z, i_n = gi.split(H, dim=1)
        h_r, h_z, h_n = (h @ W_hh.T + b_hh).split(H, dim=1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
        hs.append(h)
    return torch.stack(hs, dim=1), h
