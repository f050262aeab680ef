"""Bug: lstm_forward wraps torch.nn.LSTM, gru_step calls torch.gru_cell: values right, both banned."""

import torch


def lstm_step(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    gates = x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c_t = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_t), c_t


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    m = torch.nn.LSTM(x.shape[2], h0.shape[1], batch_first=True).to(x.dtype)
    m.weight_ih_l0.data, m.weight_hh_l0.data = W_ih, W_hh
    m.bias_ih_l0.data, m.bias_hh_l0.data = b_ih, b_hh
    hs, (h, c) = m(x, (h0[None], c0[None]))
    return hs, (h[0], c[0])


def _unused_lstm(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    h, c = h0, c0
    hs = []
    for t in range(x.shape[1]):
        gates = x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs, dim=1), (h, c)


def gru_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.gru_cell(x_t, h_prev, W_ih, W_hh, b_ih, b_hh)


def _unused_gru(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    i_r, i_z, i_n = (x_t @ W_ih.T + b_ih).chunk(3, dim=1)
    h_r, h_z, h_n = (h_prev @ W_hh.T + b_hh).chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h_prev


def gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    h = h0
    hs = []
    for t in range(x.shape[1]):
        i_r, i_z, i_n = (x[:, t] @ W_ih.T + b_ih).chunk(3, dim=1)
        h_r, h_z, h_n = (h @ W_hh.T + b_hh).chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        hs.append(h)
    return torch.stack(hs, dim=1), h
