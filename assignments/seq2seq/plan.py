"""Check plan of the `seq2seq` assignment: Bahdanau attention, a GRU decoder, teacher forcing, decoding.

Hidden cases are chosen to expose the classic bugs: source padding filled with loud values, lengths unsorted
(attention not masked, softmax over the wrong axis, renormalising over padding), Hd, He, A and E pairwise
different (swapped projections), attention queried with the new state instead of the previous one, targets
with PAD after EOS (teacher forcing without the shift, a loss averaged over padding), greedy runs where some
rows stop early and some never stop, and beam searches with k >= 3 on random decoders and on crafted bigram
tables where forgetting the parent's score, extending finished hypotheses, normalising by length when
alpha = 0 (or not when alpha > 0), keeping k hypotheses alive, or mis-ordering ties changes the answer.
Hidden tables are varied from the secret (`vary`), so no hidden case repeats the public one.
"""

from __future__ import annotations

import math

import torch

from assignments.rnn.plan import BANNED as RNN_BANNED
from assignments.rnn.plan import uniform
from assignments.sequences.plan import make_lengths, pad_loudly
from grader.checks import DEFAULT_CHECKS, ForwardCheck
from grader.checks_padding import PaddingInvarianceCheck
from grader.plan import Function, Plan

PAD, BOS, EOS = 0, 1, 2
BANNED = (
    *RNN_BANNED,
    "torch.nn.MultiheadAttention",
    "torch.nn.functional.multi_head_attention_forward",
    "torch.nn.functional.scaled_dot_product_attention",
)
LOSS_BANNED = (
    "torch.nn.functional.cross_entropy",
    "torch.nn.functional.nll_loss",
    "torch.nn.CrossEntropyLoss",
    "torch.nn.NLLLoss",
)


def make_params(gen, V: int, E: int, He: int, Hd: int, A: int, dtype, eos_bias: float = 0.0) -> dict:
    """Decoder weights; PAD and BOS get a -30 output bias (never predicted), EOS gets `eos_bias` more."""
    p = {
        "emb": uniform(gen, (V, E), 1.0, torch.float64),
        "W_s": uniform(gen, (A, Hd), 1.5 / Hd**0.5, torch.float64),
        "W_h": uniform(gen, (A, He), 1.5 / He**0.5, torch.float64),
        "v": uniform(gen, (A,), 2.0 / A**0.5, torch.float64),
        "W_ih": uniform(gen, (3 * Hd, E + He), 1.5 / Hd**0.5, torch.float64),
        "W_hh": uniform(gen, (3 * Hd, Hd), 1.5 / Hd**0.5, torch.float64),
        "b_ih": uniform(gen, (3 * Hd,), 0.5, torch.float64),
        "b_hh": uniform(gen, (3 * Hd,), 0.5, torch.float64),
        "W_out": uniform(gen, (V, Hd + He + E), 3.0 / (Hd + He + E) ** 0.5, torch.float64),
        "b_out": uniform(gen, (V,), 0.5, torch.float64),
    }
    p["b_out"][[PAD, BOS]] = -30.0
    p["b_out"][EOS] += eos_bias
    return {k: v.to(dtype) for k, v in p.items()}


def make_source(gen, B: int, S: int, He: int, Hd: int, dtype) -> dict:
    lengths = make_lengths(gen, B, S)
    enc = pad_loudly(gen, uniform(gen, (B, S, He), 1.0, dtype), lengths)
    src_mask = torch.arange(S)[None, :] < lengths[:, None]  # (B, S) bool, True = real
    return {"enc": enc, "src_mask": src_mask, "s0": uniform(gen, (B, Hd), 0.9, dtype)}


def make_target(gen, B: int, T: int, V: int) -> torch.Tensor:
    """Gold targets: words in [3, V), one EOS, then PAD; lengths unsorted, one row filling all of T."""
    lengths = make_lengths(gen, B, T)
    tgt = torch.randint(3, V, (B, T), generator=gen)
    for b, n in enumerate(lengths.tolist()):
        tgt[b, n - 1] = EOS
        tgt[b, n:] = PAD
    return tgt


def dims(p) -> tuple[int, int, int, int, int]:
    return p["V"], p["E"], p["He"], p["Hd"], p["A"]


def make_attention(gen, p, dtype):
    B, S, He, Hd, A = p["B"], p["S"], p["He"], p["Hd"], p["A"]
    src = make_source(gen, B, S, He, Hd, dtype)
    return {
        "s": src["s0"],
        "enc": src["enc"],
        "src_mask": src["src_mask"],
        "W_s": uniform(gen, (A, Hd), 1.5 / Hd**0.5, dtype),
        "W_h": uniform(gen, (A, He), 1.5 / He**0.5, dtype),
        "v": uniform(gen, (A,), 2.0 / A**0.5, dtype),
    }


def make_step(gen, p, dtype):
    V, E, He, Hd, A = dims(p)
    src = make_source(gen, p["B"], p["S"], He, Hd, dtype)
    return {
        "y_prev": torch.randint(3, V, (p["B"],), generator=gen),
        "s_prev": src["s0"],
        "enc": src["enc"],
        "src_mask": src["src_mask"],
        "params": make_params(gen, V, E, He, Hd, A, dtype),
    }


def make_teacher(gen, p, dtype):
    V, E, He, Hd, A = dims(p)
    src = make_source(gen, p["B"], p["S"], He, Hd, dtype)
    return {
        "tgt": make_target(gen, p["B"], p["T"], V),
        **src,
        "params": make_params(gen, V, E, He, Hd, A, dtype),
    }


def make_loss(gen, p, dtype):
    B, T, V = p["B"], p["T"], p["V"]
    return {"logits": uniform(gen, (B, T, V), 3.0, dtype), "tgt": make_target(gen, B, T, V)}


def make_greedy(gen, p, dtype):
    V, E, He, Hd, A = dims(p)
    src = make_source(gen, p["B"], p["S"], He, Hd, dtype)
    return {**src, "params": make_params(gen, V, E, He, Hd, A, dtype, p["_eos"]), "max_len": p["max_len"]}


# Crafted bigram tables (V = 6: PAD, BOS, EOS, a = 3, b = 4, c = 5): probabilities of the next token given the
# previous one; the decoder built from a table ignores the source and its state (see bigram_params).
TABLES: dict[str, dict[int, dict[int, float]]] = {
    # b's children are likelier than a's, but a is likelier than b: a beam that forgets the parent's score
    # keeps [b, c] at step 2 instead of [a, c]
    "parent": {
        BOS: {3: 0.5, 4: 0.3, 2: 0.2},
        3: {3: 0.55, 5: 0.45},
        4: {5: 0.7, 2: 0.3},
        5: {2: 0.9, 3: 0.1},
        2: {3: 1.0},
    },
    # EOS is likely at once and the table continues confidently after it: finished hypotheses must stay ended
    "ended": {
        BOS: {2: 0.5, 3: 0.3, 4: 0.2},
        2: {5: 0.98, 3: 0.02},
        3: {3: 0.5, 2: 0.5},
        4: {2: 0.7, 5: 0.3},
        5: {5: 0.99, 2: 0.01},
    },
    # a short hypothesis wins on the sum, long ones on the per-token average: alpha decides
    "length": {
        BOS: {2: 0.3, 3: 0.7},
        3: {3: 0.85, 2: 0.15},
        2: {3: 0.5, 4: 0.5},
        4: {2: 0.5, 3: 0.5},
        5: {2: 0.5, 3: 0.5},
    },
    # equal probabilities after the same parent: the lower token id first
    "ties": {
        BOS: {3: 0.3, 4: 0.3, 5: 0.3, 2: 0.1},
        3: {2: 0.6, 5: 0.4},
        4: {2: 0.6, 5: 0.4},
        5: {2: 0.5, 3: 0.5},
        2: {3: 1.0},
    },
}


def bigram_params(table: dict[int, dict[int, float]], V: int, He: int, Hd: int, A: int, dtype) -> dict:
    """A decoder whose logits are log table[y_prev] (1e-13 where the table says 0): E = V, emb = I."""
    logp = torch.full((V, V), math.log(1e-13), dtype=torch.float64)
    for prev, row in table.items():
        for w, prob in row.items():
            logp[prev, w] = math.log(prob)
    p = {
        "emb": torch.eye(V, dtype=torch.float64),
        "W_s": torch.zeros(A, Hd, dtype=torch.float64),
        "W_h": torch.zeros(A, He, dtype=torch.float64),
        "v": torch.zeros(A, dtype=torch.float64),
        "W_ih": torch.zeros(3 * Hd, V + He, dtype=torch.float64),
        "W_hh": torch.zeros(3 * Hd, Hd, dtype=torch.float64),
        "b_ih": torch.zeros(3 * Hd, dtype=torch.float64),
        "b_hh": torch.zeros(3 * Hd, dtype=torch.float64),
        "W_out": torch.zeros(V, Hd + He + V, dtype=torch.float64),
        "b_out": torch.zeros(V, dtype=torch.float64),
    }
    p["W_out"][:, Hd + He :] = logp.T  # logits = emb[y_prev] W_out^T = logp[y_prev]
    return {k: v.to(dtype) for k, v in p.items()}


def vary(gen, table: dict[int, dict[int, float]]) -> dict[int, dict[int, float]]:
    """The same trap with other numbers: the words a, b, c relabelled by a random permutation, and every
    distinct probability of the table multiplied by a factor of its own in [0.99, 1.01], rows renormalised.
    Equal probabilities (the ties a table is built on) and equal rows stay equal. The factors move a product
    of two probabilities against another by at most ~6%, inside the closest margin a trap relies on ("parent":
    0.5 * 0.45 against 0.3 * 0.7, 7% apart; at +-3% the trap failed on 3 of 2000 varied cases)."""
    words = (3, 4, 5)
    perm = torch.randperm(len(words), generator=gen).tolist()
    label = {PAD: PAD, BOS: BOS, EOS: EOS, **{w: words[i] for w, i in zip(words, perm, strict=True)}}
    values = sorted({prob for row in table.values() for prob in row.values()})
    noise = torch.rand(len(values), generator=gen, dtype=torch.float64).tolist()
    factor = {v: 1.0 + 0.01 * (2.0 * u - 1.0) for v, u in zip(values, noise, strict=True)}
    varied = {}
    for prev, row in table.items():
        nudged = {label[w]: prob * factor[prob] for w, prob in row.items()}
        total = sum(nudged.values())
        varied[label[prev]] = {w: prob / total for w, prob in nudged.items()}
    return varied


def make_beam(gen, p, dtype):
    He, Hd, A = p["He"], p["Hd"], p["A"]
    src = make_source(gen, 1, p["S"], He, Hd, dtype)
    if "table" in p:
        table = vary(gen, TABLES[p["table"]]) if p.get("_vary") else TABLES[p["table"]]
        params = bigram_params(table, 6, He, Hd, A, dtype)
    else:
        params = make_params(gen, p["V"], p["E"], He, Hd, A, dtype, p["_eos"])
    return {**src, "params": params, "beam_size": p["k"], "max_len": p["max_len"], "alpha": float(p["alpha"])}


ATTENTION = (
    {"B": 4, "S": 6, "He": 5, "Hd": 3, "A": 4},
    {"B": 3, "S": 7, "He": 2, "Hd": 6, "A": 5},
    {"B": 5, "S": 4, "He": 4, "Hd": 2, "A": 3},
)
STEP = (
    {"B": 3, "S": 5, "V": 9, "E": 4, "He": 6, "Hd": 5, "A": 3},
    {"B": 4, "S": 7, "V": 7, "E": 3, "He": 2, "Hd": 4, "A": 6},
)
TEACHER = (
    {"B": 3, "S": 5, "T": 4, "V": 9, "E": 4, "He": 6, "Hd": 5, "A": 3},
    {"B": 4, "S": 6, "T": 6, "V": 8, "E": 2, "He": 4, "Hd": 3, "A": 5},
    {"B": 5, "S": 3, "T": 5, "V": 7, "E": 5, "He": 3, "Hd": 4, "A": 6},
)
LOSS = ({"B": 3, "T": 5, "V": 7}, {"B": 5, "T": 4, "V": 11}, {"B": 4, "T": 6, "V": 6})
GREEDY = (
    {"B": 5, "S": 5, "V": 9, "E": 4, "He": 6, "Hd": 5, "A": 3, "max_len": 7, "_eos": 1.0},
    {"B": 6, "S": 4, "V": 7, "E": 3, "He": 6, "Hd": 4, "A": 5, "max_len": 8, "_eos": 1.5},
    {"B": 4, "S": 6, "V": 8, "E": 5, "He": 3, "Hd": 6, "A": 4, "max_len": 5, "_eos": -3.0},
)
BEAM_DIMS = {"S": 5, "V": 9, "E": 4, "He": 5, "Hd": 6, "A": 3}
TABLE_DIMS = {"S": 4, "He": 3, "Hd": 2, "A": 4}  # E = V = 6 (see bigram_params)
# Hidden crafted-table cases vary their table from the secret (see vary); the public one uses its table as
# written, so no hidden case equals it.
VARY = {"_vary": True}
BEAM = (
    {"k": 3, "max_len": 6, "alpha": 0.0, **BEAM_DIMS, "_eos": 0.5},
    {"k": 4, "max_len": 5, "alpha": 0.0, **BEAM_DIMS, "_eos": 1.0},
    {"k": 3, "max_len": 7, "alpha": 0.7, **BEAM_DIMS, "_eos": 0.5},
    {"k": 5, "max_len": 6, "alpha": 0.0, **BEAM_DIMS, "_eos": 0.0},
    {"k": 3, "max_len": 6, "alpha": 1.0, **BEAM_DIMS, "_eos": 1.0},
    {"k": 4, "max_len": 4, "alpha": 0.0, **BEAM_DIMS, "_eos": -1.0},
    {"k": 3, "max_len": 5, "alpha": 0.0, **TABLE_DIMS, "table": "parent", **VARY},
    {"k": 3, "max_len": 4, "alpha": 0.0, **TABLE_DIMS, "table": "ended", **VARY},
    {"k": 3, "max_len": 5, "alpha": 0.0, **TABLE_DIMS, "table": "length", **VARY},
    {"k": 3, "max_len": 5, "alpha": 1.0, **TABLE_DIMS, "table": "length", **VARY},
    {"k": 2, "max_len": 4, "alpha": 0.0, **TABLE_DIMS, "table": "ties", **VARY},
)
PUBLIC_BEAM = (BEAM[0], {"k": 3, "max_len": 5, "alpha": 0.0, **TABLE_DIMS, "table": "parent"})

SOURCE_PADDING = {"mask": "src_mask", "lengths": None}

PLAN = Plan(
    name="seq2seq",
    module="seq2seq",
    title="Encoder-decoder with Bahdanau attention: teacher forcing, greedy and beam search",
    banned=BANNED,
    functions=(
        Function(
            name="additive_attention",
            points=2,
            args=("s", "enc", "src_mask", "W_s", "W_h", "v"),
            make_inputs=make_attention,
            hidden=ATTENTION,
            public=ATTENTION[:1],
            outputs=("context", "weights"),
            checks=(
                *DEFAULT_CHECKS,
                PaddingInvarianceCheck((("enc", 1),), (((1,), 1),), zero=((1,),), **SOURCE_PADDING),
            ),
            signature="additive_attention(s, enc, src_mask, W_s, W_h, v) -> (context, weights)",
        ),
        Function(
            name="decoder_step",
            points=2,
            args=("y_prev", "s_prev", "enc", "src_mask", "params"),
            make_inputs=make_step,
            hidden=STEP,
            public=STEP[:1],
            outputs=("logits", "s", "weights"),
            checks=(
                *DEFAULT_CHECKS,
                PaddingInvarianceCheck((("enc", 1),), (((2,), 1),), zero=((2,),), **SOURCE_PADDING),
            ),
            signature="decoder_step(y_prev, s_prev, enc, src_mask, params) -> (logits, s, weights)",
        ),
        Function(
            name="teacher_forcing",
            points=2,
            args=("tgt", "enc", "src_mask", "s0", "params"),
            make_inputs=make_teacher,
            hidden=TEACHER,
            public=TEACHER[:1],
            outputs=("logits", "weights"),
            checks=(
                *DEFAULT_CHECKS,
                PaddingInvarianceCheck((("enc", 1),), (((1,), 2),), zero=((1,),), **SOURCE_PADDING),
            ),
            signature="teacher_forcing(tgt, enc, src_mask, s0, params) -> (logits, weights)",
        ),
        Function(
            name="sequence_loss",
            points=1,
            args=("logits", "tgt"),
            make_inputs=make_loss,
            hidden=LOSS,
            public=LOSS[:1],
            outputs="loss",
            checks=DEFAULT_CHECKS,
            banned=LOSS_BANNED,
            signature="sequence_loss(logits, tgt) -> loss",
        ),
        Function(
            name="greedy_decode",
            points=2,
            args=("enc", "src_mask", "s0", "params", "max_len"),
            make_inputs=make_greedy,
            hidden=GREEDY,
            public=GREEDY[:1],
            outputs="tokens",
            checks=(ForwardCheck(), PaddingInvarianceCheck((("enc", 1),), (), **SOURCE_PADDING)),
            signature="greedy_decode(enc, src_mask, s0, params, max_len) -> tokens",
        ),
        Function(
            name="beam_search",
            points=3,
            args=("enc", "src_mask", "s0", "params", "beam_size", "max_len", "alpha"),
            make_inputs=make_beam,
            hidden=BEAM,
            public=PUBLIC_BEAM,
            outputs=("tokens", "scores"),
            checks=(ForwardCheck(),),
            signature="beam_search(enc, src_mask, s0, params, beam_size, max_len, alpha) -> (tokens, scores)",
        ),
    ),
)
