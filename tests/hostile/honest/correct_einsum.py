"""A correct submission in a different style from the reference: einsum, a list comprehension over time,
float64 internally, and a closed-form clip. Gets full marks."""

# HONEST-SUBMISSION-MARKER-7f3a9c: other students must never read this file
import torch


def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
    a = torch.einsum("bd,hd->bh", x_t.double(), W_ih.double())
    a = a + torch.einsum("bk,hk->bh", h_prev.double(), W_hh.double())
    return torch.tanh(a + b_ih.double() + b_hh.double()).to(x_t.dtype)


def rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh):
    xw = x @ W_ih.T + b_ih + b_hh  # input projection for all steps at once, (B, T, H)
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(xw[:, t] + h @ W_hh.T)
        hs.append(h)
    return torch.stack(hs, 1), h


def rnn_backward(dhs, x, h0, W_ih, W_hh, b_ih, b_hh):
    hs, _ = rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    prev = torch.cat([h0[:, None], hs[:, :-1]], 1)
    grads = {k: torch.zeros_like(v) for k, v in dict(x=x, h0=h0, W_ih=W_ih, W_hh=W_hh, b_ih=b_ih).items()}
    carry = torch.zeros_like(h0)
    for t in range(x.shape[1] - 1, -1, -1):
        da = (dhs[:, t] + carry) * (1 - hs[:, t] ** 2)
        grads["W_ih"] = grads["W_ih"] + da.T @ x[:, t]
        grads["W_hh"] = grads["W_hh"] + da.T @ prev[:, t]
        grads["b_ih"] = grads["b_ih"] + da.sum(0)
        grads["x"][:, t] = da @ W_ih
        carry = da @ W_hh
    grads["h0"] = carry
    grads["b_hh"] = grads["b_ih"].clone()
    return grads


def clip_grad_norm(grads, max_norm):
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).to(grads[0].dtype)
    coef = min(max_norm / (total.item() + 1e-6), 1.0)
    return [g * coef for g in grads], total
