"""A GRU decoder with Bahdanau (additive) attention: teacher forcing, masked loss, greedy and beam search.

The encoder's outputs are given (enc, with src_mask True at real source tokens, False at padding).
Token ids PAD = 0, BOS = 1, EOS = 2. Decoder weights are one dict `params` (torch.nn layouts):

    emb (V, E)                       embedding of the previous target token
    W_s (A, Hd), W_h (A, He), v (A,) additive attention
    W_ih (3Hd, E + He), W_hh (3Hd, Hd), b_ih (3Hd,), b_hh (3Hd,)   GRU cell (rows r, z, n; nn.GRUCell)
    W_out (V, Hd + He + E), b_out (V,)                              output layer

One decoder step (Bahdanau et al. 2015: attention is queried with the PREVIOUS state s_{i-1}):

    score_j = v^T tanh(W_s s_{i-1} + W_h h_j)       (-inf where src_mask is False)
    a = softmax_j(score),   c_i = sum_j a_j h_j
    e = emb[y_{i-1}],   s_i = GRUCell([e, c_i], s_{i-1})
    logits_i = [s_i, c_i, e] W_out^T + b_out

Shapes: B batch, S source length, T target length, He encoder features, Hd decoder state, E embedding,
A attention units, V vocabulary, k beam size.


Self-check: seqgrade check seq2seq seq2seq.py
"""

from __future__ import annotations
import torch
from torch import Tensor

PAD, BOS, EOS = 0, 1, 2


def additive_attention(
    s: Tensor, enc: Tensor, src_mask: Tensor, W_s: Tensor, W_h: Tensor, v: Tensor
) -> tuple[Tensor, Tensor]:
    """Bahdanau attention of a query state over encoder outputs, padding masked out.

        score_j = v^T tanh(W_s s + W_h h_j),   a = softmax_j(score),   context = sum_j a_j h_j

    a_j = 0 exactly where src_mask is False.

    Shapes: s (B, Hd), enc (B, S, He), src_mask (B, S) bool (True = real token, at least one per row),
    W_s (A, Hd), W_h (A, He), v (A,) -> context (B, He), weights (B, S) (rows sum to 1).
    """
    raise NotImplementedError("additive_attention: your code here")


def decoder_step(
    y_prev: Tensor, s_prev: Tensor, enc: Tensor, src_mask: Tensor, params: dict[str, Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """One decoder step: attend with s_prev, update the GRU state, predict the next token's logits.

    Shapes: y_prev (B,) int64, s_prev (B, Hd), enc (B, S, He), src_mask (B, S) bool, params as above
    -> logits (B, V), s (B, Hd), weights (B, S).
    """
    raise NotImplementedError("decoder_step: your code here")


def teacher_forcing(
    tgt: Tensor, enc: Tensor, src_mask: Tensor, s0: Tensor, params: dict[str, Tensor]
) -> tuple[Tensor, Tensor]:
    """Run the decoder over a whole gold target: the input at step t is BOS for t = 0, else tgt[:, t-1].

    logits[:, t] scores the prediction of tgt[:, t]. All T steps run for every sequence (also where tgt is
    PAD: those logits are ignored by the loss, but they are computed and returned all the same).

    Shapes: tgt (B, T) int64, enc (B, S, He), src_mask (B, S) bool, s0 (B, Hd)
    -> logits (B, T, V), weights (B, T, S).
    """
    raise NotImplementedError("teacher_forcing: your code here")


def sequence_loss(logits: Tensor, tgt: Tensor) -> Tensor:
    """Mean cross-entropy over the non-PAD target tokens (= F.cross_entropy(..., ignore_index=PAD)).

        loss = sum_{b,t: tgt[b,t] != PAD} -log softmax(logits[b, t])[tgt[b, t]]  /  #{b,t: tgt[b,t] != PAD}

    Shapes: logits (B, T, V), tgt (B, T) int64 -> loss () (a 0-dim tensor).
    """
    raise NotImplementedError("sequence_loss: your code here")


def greedy_decode(
    enc: Tensor, src_mask: Tensor, s0: Tensor, params: dict[str, Tensor], max_len: int
) -> Tensor:
    """Greedy decoding from BOS: feed back the argmax (the lower id on ties) until EOS or max_len tokens.

    Row b holds its tokens up to and including its first EOS, then PAD. At most max_len steps are run.

    Shapes: enc (B, S, He), src_mask (B, S) bool, s0 (B, Hd), max_len int -> tokens (B, max_len) int64.
    """
    raise NotImplementedError("greedy_decode: your code here")


def beam_search(
    enc: Tensor,
    src_mask: Tensor,
    s0: Tensor,
    params: dict[str, Tensor],
    beam_size: int,
    max_len: int,
    alpha: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Beam search for one source sentence (batch of one), with the rule of the handout.

    A hypothesis is a token sequence y_1..y_n after BOS; its score is sum_i log p(y_i | y_<i, source).
    Order: higher score first; equal scores: the lexicographically smaller token sequence first (for two
    extensions of the same hypothesis: the lower token id). With F the finished list and k = beam_size:

        alive = [()]; F = []
        for step 1..max_len:
            extend every alive hypothesis by every token; keep the best k - |F| candidates
            kept candidates ending in EOS move to F, the others are the new alive list
            stop if |F| = k
        results = F + alive (hypotheses cut at max_len), k in all (requires V >= k)
        final score = score / n**alpha (n = number of tokens, EOS included), results sorted by it

    With beam_size = 1 this is greedy_decode.

    Shapes: enc (1, S, He), src_mask (1, S) bool, s0 (1, Hd), beam_size k, max_len, alpha floats
    -> tokens (k, max_len) int64 (each row: its tokens, then PAD), scores (k,) final scores, best first.
    """
    raise NotImplementedError("beam_search: your code here")
