"""Correct: the input projection for all time steps at once, a preallocated hs filled in place (a new
tensor, not an input), weight gradients of BPTT as one einsum after the loop."""

import torch


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    pre = torch.addmm(b_ih + b_hh, x_t, W_ih.t()) + h_prev.matmul(W_hh.t())
    return pre.tanh()


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    B, T, _ = x.shape
    xw = x @ W_ih.T + (b_ih + b_hh)  # (B, T, H)
    hs = x.new_empty(B, T, h0.shape[1])
    h = h0
    for t in range(T):
        h = torch.tanh(xw[:, t] + h @ W_hh.T)
        hs[:, t] = h
    return hs, hs[:, -1]


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    hs, _ = rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    T = x.shape[1]
    prev = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)  # h_{t-1} for every t, (B, T, H)
    das = torch.empty_like(hs)
    carry = torch.zeros_like(h0)
    for t in range(T - 1, -1, -1):
        das[:, t] = (dhs[:, t] + carry) * (1 - hs[:, t] * hs[:, t])
        carry = das[:, t] @ W_hh
    db = das.sum(dim=(0, 1))
    return {
        "x": das @ W_ih,
        "h0": carry,
        "W_ih": torch.einsum("bth,btd->hd", das, x),
        "W_hh": torch.einsum("bth,btk->hk", das, prev),
        "b_ih": db,
        "b_hh": db.clone(),
    }


def clip_grad_norm(grads, max_norm):
    flat = torch.cat([g.reshape(-1) for g in grads])
    total = torch.linalg.norm(flat)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    return [g.mul(coef) for g in grads], total
