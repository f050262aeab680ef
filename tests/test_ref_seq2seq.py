"""reference.seq2seq against torch (GRUCell, cross_entropy with ignore_index), loops and exhaustive search."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from reference.seq2seq import (
    BOS,
    EOS,
    PAD,
    additive_attention,
    beam_search,
    decoder_step,
    greedy_decode,
    sequence_loss,
    teacher_forcing,
)


def make_params(gen, V=7, E=3, He=4, Hd=5, A=6, scale=0.8, dtype=torch.float64):
    def u(*shape):
        return ((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale).to(dtype)

    p = {
        "emb": u(V, E),
        "W_s": u(A, Hd),
        "W_h": u(A, He),
        "v": u(A),
        "W_ih": u(3 * Hd, E + He),
        "W_hh": u(3 * Hd, Hd),
        "b_ih": u(3 * Hd),
        "b_hh": u(3 * Hd),
        "W_out": u(V, Hd + He + E),
        "b_out": u(V),
    }
    p["b_out"][[PAD, BOS]] = -30.0  # as in the graded cases: PAD and BOS are (practically) never predicted
    return p


def source(gen, B, S, He=4, Hd=5, lengths=None):
    enc = torch.randn(B, S, He, generator=gen, dtype=torch.float64)
    lengths = lengths if lengths is not None else torch.randint(1, S + 1, (B,), generator=gen)
    mask = torch.arange(S)[None, :] < lengths[:, None]
    enc = torch.where(mask[..., None], enc, 100.0)  # loud padding
    s0 = torch.randn(B, Hd, generator=gen, dtype=torch.float64)
    return enc, mask, s0


def test_attention_equals_softmax_over_real_positions():
    gen = torch.Generator().manual_seed(0)
    p = make_params(gen)
    enc, mask, s = source(gen, 4, 6, lengths=torch.tensor([6, 2, 1, 4]))
    ctx, w = additive_attention(s, enc, mask, p["W_s"], p["W_h"], p["v"])
    for b in range(4):
        n = int(mask[b].sum())
        h = enc[b, :n]  # (n, He)
        score = torch.stack([p["v"] @ torch.tanh(p["W_s"] @ s[b] + p["W_h"] @ h[j]) for j in range(n)])
        a = F.softmax(score, dim=0)
        assert (w[b, :n] - a).abs().max() <= 1e-12
        assert (w[b, n:] == 0).all()
        assert (ctx[b] - a @ h).abs().max() <= 1e-12
    assert (w.sum(1) - 1).abs().max() <= 1e-12


def test_decoder_step_equals_gru_cell():
    gen = torch.Generator().manual_seed(1)
    p = make_params(gen)
    enc, mask, s = source(gen, 3, 5)
    y = torch.tensor([1, 4, 6])
    logits, s_new, w = decoder_step(y, s, enc, mask, p)
    cell = torch.nn.GRUCell(3 + 4, 5).double()
    with torch.no_grad():
        cell.weight_ih.copy_(p["W_ih"])
        cell.weight_hh.copy_(p["W_hh"])
        cell.bias_ih.copy_(p["b_ih"])
        cell.bias_hh.copy_(p["b_hh"])
    ctx, w_prev = additive_attention(
        s, enc, mask, p["W_s"], p["W_h"], p["v"]
    )  # queried with the PREVIOUS state
    e = F.embedding(y, p["emb"])
    want_s = cell(torch.cat([e, ctx], 1), s)
    want = F.linear(torch.cat([want_s, ctx, e], 1), p["W_out"], p["b_out"])
    assert (s_new - want_s).abs().max() <= 1e-12
    assert (logits - want).abs().max() <= 1e-12
    assert torch.equal(w, w_prev)


def test_teacher_forcing_shifts_and_loss_equals_cross_entropy():
    gen = torch.Generator().manual_seed(2)
    p = make_params(gen)
    enc, mask, s0 = source(gen, 3, 5)
    tgt = torch.tensor([[4, 5, EOS, PAD], [3, EOS, PAD, PAD], [6, 6, 3, EOS]])
    logits, w = teacher_forcing(tgt, enc, mask, s0, p)
    s, y = s0, torch.full((3,), BOS)
    for t in range(4):
        lg, s, wt = decoder_step(y, s, enc, mask, p)
        assert (logits[:, t] - lg).abs().max() <= 1e-12
        assert (w[:, t] - wt).abs().max() <= 1e-12
        y = tgt[:, t]
    loss = sequence_loss(logits, tgt)
    want = F.cross_entropy(logits.reshape(-1, 7), tgt.reshape(-1), ignore_index=PAD)
    assert abs(loss.item() - want.item()) <= 1e-12
    assert loss.shape == ()


def test_gradcheck():
    gen = torch.Generator().manual_seed(3)
    p = make_params(gen, V=5, E=2, He=3, Hd=2, A=3)
    enc, mask, s0 = source(gen, 2, 4, He=3, Hd=2, lengths=torch.tensor([4, 2]))
    enc = enc.clone().requires_grad_(True)
    s0 = s0.clone().requires_grad_(True)
    W_s = p["W_s"].clone().requires_grad_(True)
    tgt = torch.tensor([[3, 4, EOS], [4, EOS, PAD]])

    def f(enc, s0, W_s):
        logits, w = teacher_forcing(tgt, enc, mask, s0, {**p, "W_s": W_s})
        return logits, w, sequence_loss(logits, tgt)

    assert torch.autograd.gradcheck(f, (enc, s0, W_s))


def greedy_one(enc, mask, s0, p, max_len):
    """Greedy decoding of one sequence, written plainly."""
    toks, y, s = [], torch.tensor([BOS]), s0
    while len(toks) < max_len:
        logits, s, _ = decoder_step(y, s, enc, mask, p)
        y = logits.argmax(1)
        toks.append(int(y))
        if toks[-1] == EOS:
            break
    return toks + [PAD] * (max_len - len(toks))


@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_per_sequence_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    p = make_params(gen, V=6)
    p["b_out"][EOS] += 1.0  # make EOS likely enough that some rows stop early
    enc, mask, s0 = source(gen, 5, 4)
    out = greedy_decode(enc, mask, s0, p, 6)
    assert out.dtype == torch.int64 and out.shape == (5, 6)
    for b in range(5):
        assert out[b].tolist() == greedy_one(enc[b : b + 1], mask[b : b + 1], s0[b : b + 1], p, 6)


def sequence_logprob(toks, enc, mask, s0, p):
    """Sum of log-probabilities of a token sequence under teacher forcing."""
    logits, _ = teacher_forcing(torch.tensor([toks]), enc, mask, s0, p)
    return torch.log_softmax(logits[0], -1).gather(1, torch.tensor(toks)[:, None]).sum()


def exhaustive(enc, mask, s0, p, max_len, alpha):
    """All complete hypotheses (ended by EOS, or max_len tokens without EOS), sorted as the rule says."""
    V = p["b_out"].shape[0]
    hyps = []
    words = [w for w in range(V) if w != EOS]  # PAD and BOS too: the search does not special-case them
    for n in range(1, max_len + 1):
        for prefix in itertools.product(words, repeat=n - 1):
            hyps.append((*prefix, EOS))
            if n == max_len:
                hyps.extend((*prefix, w) for w in words)
    scored = [(sequence_logprob(list(h), enc, mask, s0, p).item() / len(h) ** alpha, h) for h in hyps]
    scored.sort(key=lambda r: (-r[0], r[1]))
    return scored


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_beam_as_wide_as_the_space_equals_exhaustive_search(alpha):
    gen = torch.Generator().manual_seed(4)
    V, max_len = 5, 3
    p = make_params(gen, V=V, scale=1.5)
    enc, mask, s0 = source(gen, 1, 3)
    want = exhaustive(enc, mask, s0, p, max_len, alpha)
    tokens, scores = beam_search(enc, mask, s0, p, len(want), max_len, alpha)
    assert len(want) == tokens.shape[0] == 1 + 4 + 16 + 64
    for r, (score, h) in enumerate(want):
        assert tokens[r, : len(h)].tolist() == list(h) and (tokens[r, len(h) :] == PAD).all()
        assert abs(scores[r].item() - score) <= 1e-10


@pytest.mark.parametrize("seed", range(6))
def test_beam_returns_true_scores_and_top1_never_below_greedy(seed):
    gen = torch.Generator().manual_seed(50 + seed)
    p = make_params(gen, V=5, scale=1.5)
    p["b_out"][EOS] += 0.5
    enc, mask, s0 = source(gen, 1, 4)
    k, max_len = 3, 5
    tokens, scores = beam_search(enc, mask, s0, p, k, max_len)
    assert tokens.shape == (k, max_len) and scores.shape == (k,)
    assert (scores[:-1] >= scores[1:]).all()
    for r in range(k):
        toks = [t for t in tokens[r].tolist() if t != PAD]
        assert EOS not in toks[:-1]
        assert abs(sequence_logprob(toks, enc, mask, s0, p).item() - scores[r].item()) <= 1e-10
    greedy = [t for t in greedy_decode(enc, mask, s0, p, max_len)[0].tolist() if t != PAD]
    assert scores[0].item() >= sequence_logprob(greedy, enc, mask, s0, p).item() - 1e-12
    g1, _ = beam_search(enc, mask, s0, p, 1, max_len)
    assert g1[0].tolist() == greedy_decode(enc, mask, s0, p, max_len)[0].tolist()  # k = 1 is greedy
    all_tokens, all_scores = beam_search(enc, mask, s0, p, 3, max_len, alpha=1.0)
    lengths = (all_tokens != PAD).sum(1)
    assert (all_scores[:-1] >= all_scores[1:]).all() and (lengths >= 1).all()


def bigram_params(table: torch.Tensor, Hd=2, He=2, A=2):
    """A decoder whose logits depend only on the previous token: logits = table[y_prev] (a crafted table)."""
    V = table.shape[0]
    p = {
        k: torch.zeros_like(v)
        for k, v in make_params(torch.Generator().manual_seed(0), V=V, E=V, He=He, Hd=Hd, A=A).items()
    }
    p["emb"] = torch.eye(V, dtype=torch.float64)
    p["W_out"][:, Hd + He :] = table.T
    return p


def test_beam_on_a_crafted_table_prefers_the_better_total_over_the_better_first_token():
    # V = 5: tokens PAD, BOS, EOS, a=3, b=4. After BOS: a likely (0.6), b (0.4). After a: spread out;
    # after b: EOS almost surely. Best: [b, EOS] (log 0.4 + log 0.97) beats [a, ...] (log 0.6 + log 0.5).
    lp = torch.full((5, 5), -30.0, dtype=torch.float64)
    lp[BOS, [3, 4]] = torch.tensor([0.6, 0.4], dtype=torch.float64).log()
    lp[3, [EOS, 3, 4]] = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).log()
    lp[4, [EOS, 3]] = torch.tensor([0.97, 0.03], dtype=torch.float64).log()
    p = bigram_params(lp)
    enc, mask, s0 = (
        torch.zeros(1, 2, 2, dtype=torch.float64),
        torch.ones(1, 2, dtype=torch.bool),
        torch.zeros(1, 2),
    )
    tokens, scores = beam_search(enc, mask, s0.double(), p, 2, 4)
    assert tokens[0].tolist() == [4, EOS, PAD, PAD]
    assert tokens[1].tolist() == [3, EOS, PAD, PAD]
    assert greedy_decode(enc, mask, s0.double(), p, 4)[0].tolist() == [3, EOS, PAD, PAD]
    # ties: equal logits after BOS -> the lower token id is kept when only one fits
    lp2 = lp.clone()
    lp2[BOS, [3, 4]] = torch.tensor([0.5, 0.5], dtype=torch.float64).log()
    t1, _ = beam_search(enc, mask, s0.double(), bigram_params(lp2), 1, 4)
    assert t1[0].tolist() == [3, EOS, PAD, PAD]
