"""Bug: rnn_forward returns h_T.squeeze() (to "drop the extra dimension"): with a batch of one, h_T has
shape (H,) instead of (1, H)."""

import torch


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    B, T, D = x.shape
    h = h0
    hs = []
    for t in range(T):
        h = rnn_step(x[:, t, :], h, W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
    return torch.stack(hs, dim=1), h.squeeze()


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    hs, _ = rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    T = x.shape[1]
    dx = torch.zeros_like(x)
    dW_ih = torch.zeros_like(W_ih)
    dW_hh = torch.zeros_like(W_hh)
    db = torch.zeros_like(b_ih)
    dh_next = torch.zeros_like(h0)
    for t in reversed(range(T)):
        h_prev = h0 if t == 0 else hs[:, t - 1]
        da = (dhs[:, t] + dh_next) * (1 - hs[:, t] ** 2)
        dW_ih = dW_ih + da.T @ x[:, t]
        dW_hh = dW_hh + da.T @ h_prev
        db = db + da.sum(dim=0)
        dx[:, t] = da @ W_ih
        dh_next = da @ W_hh
    return {"x": dx, "h0": dh_next, "W_ih": dW_ih, "W_hh": dW_hh, "b_ih": db, "b_hh": db.clone()}


def clip_grad_norm(grads, max_norm):
    total = torch.sqrt(sum((g * g).sum() for g in grads))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [g * coef for g in grads], total
