"""The long-memory task of the `memory` assignment and the fixed model graded on it.

Task ("remember the first token"): a sequence of T = 100 tokens, each uniform over V = 4 symbols. The label is
the first token: the model must carry it across the 99 later tokens drawn from the same symbols, so it cannot
tell the key by its value, only by its position. The last token is a decoy: in a random DECOY = 30% of the
sequences it is overwritten by the label, so reading only the last token scores 0.3 + 0.7/4 = 47.5%, and a
model without long memory settles there (chance is 25%, the first token gives 100%).
Measured (benchmarks/memory_premise.py, 5 seeds): an LSTM or GRU trained by reference.train_memory (gate bias
4, Adam) reaches 99% in 600-1200 steps; a plain tanh RNN trained the same way for 4500 steps, with Adam or
SGD, stays at the decoy's 47-50%.

Model (fixed by the handout): one-hot inputs, one recurrent layer in torch.nn layout (nn.LSTM, nn.GRU or
nn.RNN with tanh, batch_first=True, h0 = c0 = 0), and a linear read-out of the last hidden state:

    x_t = onehot(token_t)                                     (B, V)
    h_1..h_T = cell(x_1..x_T)                                 LSTM / GRU / Elman, as reference.gated/rnn
    logits = h_T W_fc^T + b_fc                                (B, K)

The weights are a dict with the keys of `MemoryModel().state_dict()` in the student's template:
"rnn.weight_ih_l0" (G*H, V), "rnn.weight_hh_l0" (G*H, H), "rnn.bias_ih_l0" (G*H,), "rnn.bias_hh_l0" (G*H,),
"fc.weight" (K, H), "fc.bias" (K,), with G = 4 (LSTM), 3 (GRU) or 1 (Elman RNN); the cell is read off G.

Shapes: B batch, T time, V vocabulary, K classes, H hidden units.
"""

from __future__ import annotations

import torch
from torch import Tensor

from reference.gated import gru_forward, lstm_forward
from reference.rnn import rnn_forward

VOCAB = 4
CLASSES = 4
LENGTH = 100
DECOY = 0.3
MAX_HIDDEN = 256
KEYS = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "fc.weight", "fc.bias")
CELLS = {4: "lstm", 3: "gru", 1: "rnn"}


def make_batch(gen: torch.Generator, B: int, T: int = LENGTH, decoy: float = DECOY) -> tuple[Tensor, Tensor]:
    """B sequences of the task from a seeded generator: uniform tokens; the label is the first one; with
    probability `decoy` the last token is overwritten by the label.

    Shapes: -> tokens (B, T) int64, labels (B,) int64 (= tokens[:, 0]).
    """
    tokens = torch.randint(0, VOCAB, (B, T), generator=gen)  # (B, T)
    labels = tokens[:, 0].clone()  # (B,)
    copy = torch.rand(B, generator=gen, dtype=torch.float64) < decoy  # (B,)
    tokens[copy, -1] = labels[copy]
    return tokens, labels


def check_weights(weights: dict[str, Tensor]) -> str:
    """Validate a weights dict; return the cell kind ("lstm", "gru", "rnn") or raise ValueError saying why."""
    missing = [k for k in KEYS if k not in weights]
    if missing:
        raise ValueError(f"the weights lack the keys {missing} (have {sorted(weights)})")
    w_hh = weights["rnn.weight_hh_l0"]
    if w_hh.ndim != 2 or w_hh.shape[1] == 0 or w_hh.shape[0] % w_hh.shape[1]:
        raise ValueError(
            f"rnn.weight_hh_l0 has shape {tuple(w_hh.shape)}, expected (G*H, H) with G = 4, 3 or 1"
        )
    H = w_hh.shape[1]
    G = w_hh.shape[0] // H
    if G not in CELLS:
        raise ValueError(
            f"rnn.weight_hh_l0 has shape {tuple(w_hh.shape)}: {G}*H rows is no LSTM (4), GRU (3) or RNN (1)"
        )
    if H > MAX_HIDDEN:
        raise ValueError(f"hidden size {H} exceeds the limit of {MAX_HIDDEN}")
    want = {
        "rnn.weight_ih_l0": (G * H, VOCAB),
        "rnn.weight_hh_l0": (G * H, H),
        "rnn.bias_ih_l0": (G * H,),
        "rnn.bias_hh_l0": (G * H,),
        "fc.weight": (CLASSES, H),
        "fc.bias": (CLASSES,),
    }
    for k, shape in want.items():
        if tuple(weights[k].shape) != shape:
            raise ValueError(f"{k} has shape {tuple(weights[k].shape)}, expected {shape} ({CELLS[G]}, H={H})")
        if not torch.isfinite(weights[k]).all():
            raise ValueError(f"{k} contains NaN or infinity")
    return CELLS[G]


def memory_logits(weights: dict[str, Tensor], tokens: Tensor) -> Tensor:
    """Class scores of the fixed model for a batch of token sequences.

    Shapes: weights as in the module docstring, tokens (B, T) int64 -> logits (B, K).
    """
    cell = check_weights(weights)
    w = {k: weights[k] for k in KEYS}
    dtype = w["rnn.weight_hh_l0"].dtype
    H = w["rnn.weight_hh_l0"].shape[1]
    x = torch.nn.functional.one_hot(tokens, VOCAB).to(dtype)  # (B, T, V)
    h0 = torch.zeros(tokens.shape[0], H, dtype=dtype)  # (B, H)
    args = (w["rnn.weight_ih_l0"], w["rnn.weight_hh_l0"], w["rnn.bias_ih_l0"], w["rnn.bias_hh_l0"])
    if cell == "lstm":
        _, (h_T, _) = lstm_forward(x, h0, h0.clone(), *args)
    elif cell == "gru":
        _, h_T = gru_forward(x, h0, *args)
    else:
        _, h_T = rnn_forward(x, h0, *args)
    return h_T @ w["fc.weight"].T + w["fc.bias"]  # (B, K)


def accuracy(weights: dict[str, Tensor], tokens: Tensor, labels: Tensor) -> float:
    """Fraction of sequences whose arg-max class equals the label. Shapes: tokens (B, T), labels (B,)."""
    with torch.no_grad():
        return float((memory_logits(weights, tokens).argmax(dim=1) == labels).double().mean())
