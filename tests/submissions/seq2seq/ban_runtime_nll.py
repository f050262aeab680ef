"""Correct values, but sequence_loss calls the banned nll_loss as torch.ops.aten.nll_loss_nd.default, looked
up by a name built at run time: no source scan reads it, the worker's tracer sees it called."""

import torch

PAD, BOS, EOS = 0, 1, 2


def additive_attention(s, enc, src_mask, W_s, W_h, v):
    e = torch.tanh((s @ W_s.T).unsqueeze(1) + enc @ W_h.T) @ v  # (B, S)
    e = e.masked_fill(~src_mask, -1e9)
    a = torch.softmax(e, dim=-1)
    return torch.bmm(a.unsqueeze(1), enc).squeeze(1), a


def gru_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    ir, iz, inn = (x @ W_ih.T + b_ih).chunk(3, 1)
    hr, hz, hn = (h @ W_hh.T + b_hh).chunk(3, 1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    return (1 - z) * n + z * h


def decoder_step(y_prev, s_prev, enc, src_mask, params):
    p = params
    e = p["emb"][y_prev]
    c, a = additive_attention(s_prev, enc, src_mask, p["W_s"], p["W_h"], p["v"])
    s = gru_cell(torch.cat([e, c], 1), s_prev, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    return torch.cat([s, c, e], 1) @ p["W_out"].T + p["b_out"], s, a


def teacher_forcing(tgt, enc, src_mask, s0, params):
    B, T = tgt.shape
    y = torch.full((B,), BOS, dtype=torch.long)
    s, logits, weights = s0, [], []
    for t in range(T):
        lg, s, a = decoder_step(y, s, enc, src_mask, params)
        logits.append(lg)
        weights.append(a)
        y = tgt[:, t]
    return torch.stack(logits, 1), torch.stack(weights, 1)


def sequence_loss(logits, tgt):
    V = logits.shape[-1]
    nll = getattr(torch.ops.aten, "nll_loss" + "_nd").default
    return nll(torch.log_softmax(logits, -1).reshape(-1, V), tgt.reshape(-1), None, 1, PAD)


def greedy_decode(enc, src_mask, s0, params, max_len):
    B = enc.shape[0]
    out = torch.full((B, max_len), PAD, dtype=torch.long)
    y, s = torch.full((B,), BOS, dtype=torch.long), s0
    finished = torch.zeros(B, dtype=torch.bool)
    for t in range(max_len):
        logits, s, _ = decoder_step(y, s, enc, src_mask, params)
        y = logits.argmax(-1)
        out[:, t] = y.masked_fill(finished, PAD)
        finished = finished | (y == EOS)
        if finished.all():
            break
    return out


def beam_search(enc, src_mask, s0, params, beam_size, max_len, alpha):
    V = params["b_out"].shape[0]
    seqs = torch.zeros(1, 0, dtype=torch.long)  # alive hypotheses, best first
    scores = torch.zeros(1, dtype=enc.dtype)
    states = s0
    done = []  # (tokens list, score tensor)
    for t in range(max_len):
        n = seqs.shape[0]
        y = seqs[:, -1] if t > 0 else torch.full((n,), BOS, dtype=torch.long)
        logits, s_new, _ = decoder_step(y, states, enc.expand(n, -1, -1), src_mask.expand(n, -1), params)
        total = (scores[:, None] + torch.log_softmax(logits, -1)).reshape(-1)  # (n * V,), parent-major
        order = torch.sort(total, descending=True, stable=True).indices[: beam_size - len(done)]
        parent, token = order // V, order % V
        new_seqs = torch.cat([seqs[parent], token[:, None]], 1)
        is_eos = token == EOS
        for i in torch.nonzero(is_eos).flatten().tolist():
            done.append((new_seqs[i].tolist(), total[order[i]]))
        keep = ~is_eos
        seqs, scores, states = new_seqs[keep], total[order][keep], s_new[parent[keep]]
        if len(done) == beam_size:
            break
    results = done + [(seqs[i].tolist(), scores[i]) for i in range(seqs.shape[0])]
    results = [(toks, sc / len(toks) ** alpha) for toks, sc in results]
    results.sort(key=lambda r: (-r[1].item(), r[0]))
    tokens = torch.full((len(results), max_len), PAD, dtype=torch.long)
    for r, (toks, _) in enumerate(results):
        tokens[r, : len(toks)] = torch.tensor(toks)
    return tokens, torch.stack([sc for _, sc in results])
