"""Deep, bidirectional and variable-length recurrent networks, in torch.nn.RNN / GRU / LSTM layout.

`cell` is "rnn" (Elman, tanh), "gru" or "lstm"; one step is rnn_step of the `rnn` assignment, or gru_step /
lstm_step of the `gated` one (gate blocks i, f, g, o and r, z, n, stacked along the rows of the weights).

Weights of L layers are a list of L dicts, one per layer, with torch's names minus the `_l{k}` suffix:

    layers[l] = {"W_ih": (G*H, D_l), "W_hh": (G*H, H), "b_ih": (G*H,), "b_hh": (G*H,)}      one direction
      bidirectional: + {"W_ih_reverse": ..., "W_hh_reverse": ..., "b_ih_reverse": ..., "b_hh_reverse": ...}

with G = 1 (rnn), 3 (gru), 4 (lstm); D_0 = D, D_l = H (one direction) or 2H (bidirectional) for l >= 1.
`layers[l]["W_ih"]` is `torch.nn.GRU(...).weight_ih_l{l}`, `layers[l]["W_ih_reverse"]` is
`weight_ih_l{l}_reverse`, and so on.

States follow torch: h0 / h_n are (L, B, H) (one direction) or (2L, B, H) in the order
(layer 0 forward, layer 0 backward, layer 1 forward, ...); an LSTM's state is the tuple (h, c) of two such.

Variable length: x (B, T, D) holds sequence b in x[b, :lengths[b]], the rest is padding with arbitrary
values. The forward direction reads t = 0..len-1 and its final state is the one after t = len-1; the
backward direction starts from its h0 at t = len-1 and reads down to t = 0. Outputs at t >= len are 0.
This is torch's module run on pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),
unpacked with pad_packed_sequence(..., batch_first=True, total_length=T).

Shapes: B batch, T time, D input features, H hidden units, L layers, V vocabulary, E embedding, C classes.


Self-check: seqgrade check sequences sequences.py
"""

from __future__ import annotations
from typing import Any
import torch
from torch import Tensor

CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def cell_step(
    cell: str, x_t: Tensor, state: Any, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor
) -> Any:
    """One step of the named cell ("rnn", "gru" or "lstm"), as rnn.rnn_step, gated.gru_step, gated.lstm_step.

    state is h (B, H), or the pair (h, c) for "lstm"; the new state has the same form.

    Shapes: x_t (B, D), state (B, H) or ((B, H), (B, H)), W_ih (G*H, D), W_hh (G*H, H), b_ih, b_hh (G*H,)
    -> (B, H) or ((B, H), (B, H)).
    """
    raise NotImplementedError("cell_step: your code here")


def stacked_forward(cell: str, x: Tensor, state0: Any, layers: list[dict[str, Tensor]]) -> tuple[Tensor, Any]:
    """L stacked layers over full-length sequences; equals torch.nn.{RNN,GRU,LSTM}(D, H, num_layers=L,
    batch_first=True) with the same weights. Layer l + 1 reads the outputs hs of layer l.

    Shapes: x (B, T, D), state0 h0 (L, B, H) or (h0, c0) for "lstm", layers a list of L dicts
    -> out (B, T, H) (the top layer's hs), h_n (L, B, H) or (h_n, c_n) for "lstm".
    """
    raise NotImplementedError("stacked_forward: your code here")


def bidirectional_forward(
    cell: str, x: Tensor, lengths: Tensor, state0: Any, layers: list[dict[str, Tensor]]
) -> tuple[Tensor, Any]:
    """L stacked bidirectional layers over a padded batch with per-sequence lengths (any order).

    Equals torch.nn.{RNN,GRU,LSTM}(D, H, num_layers=L, bidirectional=True, batch_first=True) applied to
    pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) and unpacked with
    pad_packed_sequence(..., batch_first=True, total_length=T).
    Layer l + 1 reads [forward, backward] of layer l.

        out[b, t] = [h_fwd[b, t], h_bwd[b, t]] for t < lengths[b], 0 for t >= lengths[b]

    Shapes: x (B, T, D), lengths (B,) int64 with 1 <= lengths[b] <= T, state0 h0 (2L, B, H) or (h0, c0) for
    "lstm", layers a list of L dicts with forward and `_reverse` weights
    -> out (B, T, 2H), h_n (2L, B, H) or (h_n, c_n) for "lstm", ordered (l0 fwd, l0 bwd, l1 fwd, ...).
    """
    raise NotImplementedError("bidirectional_forward: your code here")


def classify(
    tokens: Tensor,
    lengths: Tensor,
    embedding: Tensor,
    layers: list[dict[str, Tensor]],
    W_out: Tensor,
    b_out: Tensor,
) -> Tensor:
    """Sequence-to-vector classifier: embedding -> L-layer bidirectional GRU (zero initial state) -> logits.

        e = embedding[tokens];   _, h_n = bidirectional_forward("gru", e, lengths, 0, layers)
        feature = [h_n[-2], h_n[-1]]   (top layer: forward state after the last real token,
                                        backward state after reading down to t = 0)
        logits = feature W_out^T + b_out

    Tokens at t >= lengths[b] are padding (any ids); they must not change the logits.

    Shapes: tokens (B, T) int64, lengths (B,) int64, embedding (V, E), layers (GRU, bidirectional),
    W_out (C, 2H), b_out (C,) -> logits (B, C).
    """
    raise NotImplementedError("classify: your code here")
