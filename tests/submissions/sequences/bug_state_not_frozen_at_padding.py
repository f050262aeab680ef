"""Classic bug: the state is not frozen after a row's last token: the padding keeps updating it, so the final
states in h_n are the ones after t = T-1 whatever the length (in both directions: reversed rows keep their
padding at the end). The outputs are still masked, so `out` is right."""

import torch


def cell_step(cell, x_t, state, W_ih, W_hh, b_ih, b_hh):
    if cell == "lstm":
        h, c = state
        g = torch.addmm(b_ih, x_t, W_ih.t()) + torch.addmm(b_hh, h, W_hh.t())
        H = h.shape[1]
        i, f, gg, o = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], g[:, 3 * H :]
        c_new = f.sigmoid() * c + i.sigmoid() * gg.tanh()
        return o.sigmoid() * c_new.tanh(), c_new
    if cell == "gru":
        H = state.shape[1]
        gi = torch.addmm(b_ih, x_t, W_ih.t())
        gh = torch.addmm(b_hh, state, W_hh.t())
        r = (gi[:, :H] + gh[:, :H]).sigmoid()
        z = (gi[:, H : 2 * H] + gh[:, H : 2 * H]).sigmoid()
        n = (gi[:, 2 * H :] + r * gh[:, 2 * H :]).tanh()
        return n + z * (state - n)
    return torch.tanh(torch.addmm(b_ih, x_t, W_ih.t()) + torch.addmm(b_hh, state, W_hh.t()))


def _run(cell, x, lengths, state, W):
    """Forward over time; rows stop updating after their length. W = (W_ih, W_hh, b_ih, b_hh)."""
    B, T, _ = x.shape
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
    outs = []
    for t in range(T):
        m = mask[:, t : t + 1]
        new = cell_step(cell, x[:, t], state, *W)
        if cell == "lstm":
            state = new
            outs.append(m * new[0])
        else:
            state = new
            outs.append(m * new)
    return torch.stack(outs, 1), state


def _reverse(x, lengths):
    """Reverse each row's first lengths[b] positions, leave the padding where it is."""
    T = x.shape[1]
    t = torch.arange(T)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    return torch.gather(x, 1, idx[:, :, None].expand(-1, -1, x.shape[2]))


def _init(cell, state0, k):
    return (state0[0][k], state0[1][k]) if cell == "lstm" else state0[k]


def _collect(cell, finals):
    if cell == "lstm":
        return torch.cat([f[0][None] for f in finals]), torch.cat([f[1][None] for f in finals])
    return torch.cat([f[None] for f in finals])


def stacked_forward(cell, x, state0, layers):
    lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    finals = []
    for k, layer in enumerate(layers):
        x, s = _run(
            cell, x, lengths, _init(cell, state0, k), [layer[n] for n in ("W_ih", "W_hh", "b_ih", "b_hh")]
        )
        finals.append(s)
    return x, _collect(cell, finals)


def bidirectional_forward(cell, x, lengths, state0, layers):
    finals = []
    names = ("W_ih", "W_hh", "b_ih", "b_hh")
    for k, layer in enumerate(layers):
        fwd, s_f = _run(cell, x, lengths, _init(cell, state0, 2 * k), [layer[n] for n in names])
        rev, s_b = _run(
            cell,
            _reverse(x, lengths),
            lengths,
            _init(cell, state0, 2 * k + 1),
            [layer[n + "_reverse"] for n in names],
        )
        x = torch.cat([fwd, _reverse(rev, lengths)], dim=-1)
        finals += [s_f, s_b]
    return x, _collect(cell, finals)


def classify(tokens, lengths, embedding, layers, W_out, b_out):
    e = torch.nn.functional.embedding(tokens, embedding)
    H = layers[0]["W_hh"].shape[1]
    _, h_n = bidirectional_forward("gru", e, lengths, e.new_zeros(2 * len(layers), e.shape[0], H), layers)
    return torch.nn.functional.linear(torch.cat([h_n[-2], h_n[-1]], -1), W_out, b_out)
