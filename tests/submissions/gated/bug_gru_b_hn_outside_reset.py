"""Bug: gru_step keeps b_hn outside the reset gate, n = tanh(x W_in^T + b_in + r * (h W_hn^T) + b_hn), instead
of torch's r * (h W_hn^T + b_hn); gru_forward, calling it, inherits the bug."""

import torch


def lstm_step(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    def gate(k):
        rows = slice(k * H, (k + 1) * H)
        return x_t @ W_ih[rows].T + h_prev @ W_hh[rows].T + b_ih[rows] + b_hh[rows]
    i, f, g, o = torch.sigmoid(gate(0)), torch.sigmoid(gate(1)), torch.tanh(gate(2)), torch.sigmoid(gate(3))
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    h, c, hs = h0, c0, []
    for x_t in x.unbind(1):
        h, c = lstm_step(x_t, h, c, W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
    return torch.stack(hs, 1), (h, c)


def gru_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    H = h_prev.shape[1]
    W_ir, W_iz, W_in = W_ih.split(H)
    W_hr, W_hz, W_hn = W_hh.split(H)
    b_ir, b_iz, b_in = b_ih.split(H)
    b_hr, b_hz, b_hn = b_hh.split(H)
    r = torch.sigmoid(x_t @ W_ir.T + b_ir + h_prev @ W_hr.T + b_hr)
    u = 1 - torch.sigmoid(x_t @ W_iz.T + b_iz + h_prev @ W_hz.T + b_hz)  # the lectures' update gate = 1 - z
    n = torch.tanh(x_t @ W_in.T + b_in + r * (h_prev @ W_hn.T) + b_hn)
    return u * n + (1 - u) * h_prev


def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = gru_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
    return torch.stack(hs, 1), h
