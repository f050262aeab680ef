"""A buggy submission with two classic mistakes: W_hh applied untransposed (h W_hh instead of h W_hh^T)
in the step, and clipping that forgets the 1e-6 and clips even below the threshold."""

# HONEST-SUBMISSION-MARKER-7f3a9c: other students must never read this file
import torch


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh + b_hh)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = rnn_step(x[:, t], h, W_ih, W_hh, b_ih, b_hh)
        hs.append(h)
    return torch.stack(hs, 1), h


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    hs, _ = rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    out = {k: torch.zeros_like(v) for k, v in dict(x=x, W_ih=W_ih, W_hh=W_hh, b_ih=b_ih).items()}
    dh = torch.zeros_like(h0)
    for t in reversed(range(x.shape[1])):
        h_prev = hs[:, t - 1] if t else h0
        da = (dhs[:, t] + dh) * (1 - hs[:, t] ** 2)
        out["W_ih"] += da.T @ x[:, t]
        out["W_hh"] += da.T @ h_prev
        out["b_ih"] += da.sum(0)
        out["x"][:, t] = da @ W_ih
        dh = da @ W_hh
    out["h0"], out["b_hh"] = dh, out["b_ih"]
    return out


def clip_grad_norm(grads, max_norm):
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    return [g * (max_norm / total) for g in grads], total
