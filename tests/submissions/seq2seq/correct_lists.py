"""A correct submission in another style: attention masked after exp and renormalised, einsum everywhere,
a per-row greedy loop, and a beam search over Python lists with sorted()."""

import math

import torch

PAD, BOS, EOS = 0, 1, 2


def additive_attention(s, enc, src_mask, W_s, W_h, v):
    scores = torch.einsum(
        "bsa,a->bs",
        torch.tanh(torch.einsum("bsh,ah->bsa", enc, W_h) + torch.einsum("bd,ad->ba", s, W_s)[:, None]),
        v,
    )
    scores = scores - scores.masked_fill(~src_mask, -math.inf).amax(1, keepdim=True)
    w = torch.exp(scores) * src_mask
    w = w / w.sum(1, keepdim=True)
    return torch.einsum("bs,bsh->bh", w, enc), w


def decoder_step(y_prev, s_prev, enc, src_mask, params):
    e = torch.nn.functional.embedding(y_prev, params["emb"])
    c, w = additive_attention(s_prev, enc, src_mask, params["W_s"], params["W_h"], params["v"])
    x = torch.cat([e, c], -1)
    gi = x @ params["W_ih"].T + params["b_ih"]
    gh = s_prev @ params["W_hh"].T + params["b_hh"]
    H = s_prev.shape[-1]
    r = torch.sigmoid(gi[:, :H] + gh[:, :H])
    z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
    n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
    s = (1 - z) * n + z * s_prev
    out = torch.cat([s, c, e], -1) @ params["W_out"].T + params["b_out"]
    return out, s, w


def teacher_forcing(tgt, enc, src_mask, s0, params):
    inputs = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)
    s, L, W = s0, [], []
    for t in range(tgt.shape[1]):
        lg, s, w = decoder_step(inputs[:, t], s, enc, src_mask, params)
        L.append(lg)
        W.append(w)
    return torch.stack(L, 1), torch.stack(W, 1)


def sequence_loss(logits, tgt):
    nll = -(torch.log_softmax(logits, -1) * torch.nn.functional.one_hot(tgt, logits.shape[-1])).sum(-1)
    keep = (tgt != PAD).to(logits.dtype)
    return (nll * keep).sum() / keep.sum()


def greedy_decode(enc, src_mask, s0, params, max_len):
    rows = []
    for b in range(enc.shape[0]):
        y, s, toks = torch.tensor([BOS]), s0[b : b + 1], []
        while len(toks) < max_len:
            lg, s, _ = decoder_step(y, s, enc[b : b + 1], src_mask[b : b + 1], params)
            y = lg.argmax(-1)
            toks.append(int(y))
            if toks[-1] == EOS:
                break
        rows.append(toks + [PAD] * (max_len - len(toks)))
    return torch.tensor(rows, dtype=torch.long)


def beam_search(enc, src_mask, s0, params, beam_size, max_len, alpha):
    beams = [([], torch.zeros((), dtype=enc.dtype), s0)]
    finished = []
    for _ in range(max_len):
        cands = []
        for toks, score, s in beams:
            y = torch.tensor([toks[-1] if toks else BOS])
            lg, s_new, _ = decoder_step(y, s, enc, src_mask, params)
            logp = torch.log_softmax(lg[0], -1)
            for w in range(logp.shape[0]):
                cands.append((toks + [w], score + logp[w], s_new))
        cands.sort(key=lambda c: (-c[1].item(), c[0]))
        beams = []
        for c in cands[: beam_size - len(finished)]:
            (finished if c[0][-1] == EOS else beams).append(c)
        if not beams:
            break
    final = [(toks, score / len(toks) ** alpha) for toks, score, _ in finished + beams]
    final.sort(key=lambda c: (-c[1].item(), c[0]))
    tokens = torch.full((len(final), max_len), PAD, dtype=torch.long)
    for i, (toks, _) in enumerate(final):
        tokens[i, : len(toks)] = torch.tensor(toks)
    return tokens, torch.stack([sc for _, sc in final])
