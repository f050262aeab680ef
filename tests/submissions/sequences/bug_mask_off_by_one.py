"""Classic bug: the "still running" mask is off by one (lengths >= t instead of lengths > t): each direction
reads one padding position, t = lengths[b], as if it were a real token."""

import torch


def cell_step(cell, x_t, state, W_ih, W_hh, b_ih, b_hh):
    if cell == "rnn":
        return torch.tanh(x_t @ W_ih.T + b_ih + state @ W_hh.T + b_hh)
    if cell == "gru":
        r_i, z_i, n_i = (x_t @ W_ih.T + b_ih).chunk(3, dim=1)
        r_h, z_h, n_h = (state @ W_hh.T + b_hh).chunk(3, dim=1)
        r = torch.sigmoid(r_i + r_h)
        z = torch.sigmoid(z_i + z_h)
        n = torch.tanh(n_i + r * n_h)
        return (1 - z) * n + z * state
    h, c = state
    i, f, g, o = (x_t @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _hidden(cell, state):
    return state[0] if cell == "lstm" else state


def _select(cell, keep, new, old):
    """new where keep (B, 1) is True, else old."""
    if cell == "lstm":
        return tuple(torch.where(keep, n, o) for n, o in zip(new, old, strict=True))
    return torch.where(keep, new, old)


def _direction(cell, x, lengths, state, w, suffix, reverse):
    T = x.shape[1]
    outs = [None] * T
    times = range(T - 1, -1, -1) if reverse else range(T)
    for t in times:
        keep = (lengths >= t)[:, None]
        new = cell_step(
            cell,
            x[:, t],
            state,
            w["W_ih" + suffix],
            w["W_hh" + suffix],
            w["b_ih" + suffix],
            w["b_hh" + suffix],
        )
        state = _select(cell, keep, new, state)
        outs[t] = torch.where(keep, _hidden(cell, new), torch.zeros_like(_hidden(cell, new)))
    return torch.stack(outs, dim=1), state


def _pick(cell, state0, k):
    return (state0[0][k], state0[1][k]) if cell == "lstm" else state0[k]


def _stack(cell, states):
    if cell == "lstm":
        return torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states])
    return torch.stack(states)


def stacked_forward(cell, x, state0, layers):
    B, T = x.shape[0], x.shape[1]
    lengths = torch.full((B,), T)
    finals = []
    for k, w in enumerate(layers):
        x, s = _direction(cell, x, lengths, _pick(cell, state0, k), w, "", False)
        finals.append(s)
    return x, _stack(cell, finals)


def bidirectional_forward(cell, x, lengths, state0, layers):
    finals = []
    for k, w in enumerate(layers):
        fwd, s_f = _direction(cell, x, lengths, _pick(cell, state0, 2 * k), w, "", False)
        bwd, s_b = _direction(cell, x, lengths, _pick(cell, state0, 2 * k + 1), w, "_reverse", True)
        x = torch.cat([fwd, bwd], dim=2)
        finals += [s_f, s_b]
    return x, _stack(cell, finals)


def classify(tokens, lengths, embedding, layers, W_out, b_out):
    H = layers[0]["W_hh"].shape[1]
    h0 = torch.zeros(2 * len(layers), tokens.shape[0], H, dtype=embedding.dtype)
    _, h_n = bidirectional_forward("gru", embedding[tokens], lengths, h0, layers)
    return torch.cat([h_n[-2], h_n[-1]], dim=1) @ W_out.T + b_out
