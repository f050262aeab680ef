"""Attention and a small GPT: scaled dot-product attention, causal self-attention, layer norm, a pre-LN block.

Row-vector convention and torch.nn layouts, so every function can be checked against torch with copied
weights:

    attention(Q, K, V) = softmax(Q K^T / sqrt(hd) + M) V      M = 0 where the mask is True, -inf where False
    [q | k | v] = x W_in^T + b_in                              W_in (3D, D): q, k, v blocks of D rows each,
                                                               as nn.MultiheadAttention.in_proj_weight
    head h uses the features h*hd .. (h+1)*hd - 1 of q, k, v   (hd = D / nh)
    LN(x) = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta  biased variance over the last axis
    block(x) = x + attn(LN_1(x));  then  x + MLP(LN_2(x))      MLP(h) = GELU(h W_1^T + b_1) W_2^T + b_2

Masks are boolean with True meaning "may attend" (the polarity of F.scaled_dot_product_attention; the
attn_mask of nn.MultiheadAttention uses the opposite: True there means "may NOT attend").
GELU is the exact one, 0.5 x (1 + erf(x / sqrt 2)) (torch's default, not approximate="tanh").

Shapes: B batch, T time (queries), S source length (keys), D model width, nh heads, hd = D / nh head width,
F MLP width, V vocabulary, L layers, T_max the longest sequence the position table covers.


Self-check: seqgrade check transformer transformer.py
"""

from __future__ import annotations
import math
import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_WEIGHTS = (
    "norm1_weight", "norm1_bias", "in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias",
    "norm2_weight", "norm2_bias", "linear1_weight", "linear1_bias", "linear2_weight", "linear2_bias",
)  # fmt: skip


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(hd), masked) v, and the attention weights.

    Where `mask` is False the score is -inf before the softmax, so every row of the weights sums to 1 over the
    positions the query may attend to (each row must allow at least one). Leading dimensions broadcast.

    Shapes: q (..., T, hd), k (..., S, hd), v (..., S, hv), mask (T, S) bool (or broadcastable to
    (..., T, S)) or None -> out (..., T, hv), weights (..., T, S).
    """
    raise NotImplementedError("scaled_dot_product_attention: your code here")


def causal_mask(T: int) -> Tensor:
    """The causal mask: position t may attend to positions 0..t (itself and the past), never to the future.

    Shapes: T an int -> mask (T, T) bool, mask[t, s] = (s <= t).
    """
    raise NotImplementedError("causal_mask: your code here")


def causal_self_attention(
    x: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor,
    n_heads: int,
) -> tuple[Tensor, Tensor]:
    """Multi-head causal self-attention with a fused input projection; equals nn.MultiheadAttention(D, nh,
    batch_first=True) with attn_mask=~causal_mask(T) and F.scaled_dot_product_attention(is_causal=True).

        [q | k | v] = x W_in^T + b_in;  head h: y_h = attention(q_h, k_h, v_h, causal_mask(T))
        y = [y_0 | ... | y_{nh-1}] W_out^T + b_out

    Shapes: x (B, T, D), in_proj_weight (3D, D), in_proj_bias (3D,), out_proj_weight (D, D),
    out_proj_bias (D,), n_heads an int dividing D
    -> y (B, T, D), weights (B, nh, T, T) (per head, not averaged).
    """
    raise NotImplementedError("causal_self_attention: your code here")


def sinusoidal_positions(T: int, D: int) -> Tensor:
    """The sinusoidal position table of Vaswani et al. (2017), computed in float64 and returned as float32.

        P[t, 2i] = sin(t / 10000^(2i / D)),   P[t, 2i + 1] = cos(t / 10000^(2i / D))

    Shapes: T, D ints -> P (T, D) float32.
    """
    raise NotImplementedError("sinusoidal_positions: your code here")


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis with the biased variance; equals nn.LayerNorm(D, eps=eps).

        y = (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * weight + bias

    Shapes: x (..., D), weight (D,), bias (D,) -> y (..., D).
    """
    raise NotImplementedError("layer_norm: your code here")


def gpt_block(
    x: Tensor,
    norm1_weight: Tensor, norm1_bias: Tensor,
    in_proj_weight: Tensor, in_proj_bias: Tensor, out_proj_weight: Tensor, out_proj_bias: Tensor,
    norm2_weight: Tensor, norm2_bias: Tensor,
    linear1_weight: Tensor, linear1_bias: Tensor, linear2_weight: Tensor, linear2_bias: Tensor,
    n_heads: int,
) -> Tensor:  # fmt: skip
    """A pre-LN transformer block; equals nn.TransformerEncoderLayer(D, nh, F, dropout=0, activation="gelu",
    batch_first=True, norm_first=True) run with a causal mask.

        x = x + causal_self_attention(LN_1(x))
        y = x + GELU(LN_2(x) W_1^T + b_1) W_2^T + b_2           GELU exact (erf)

    Shapes: x (B, T, D), norm1_*/norm2_* (D,), in_proj_weight (3D, D), in_proj_bias (3D,),
    out_proj_weight (D, D), out_proj_bias (D,), linear1_weight (F, D), linear1_bias (F,),
    linear2_weight (D, F), linear2_bias (D,), n_heads an int dividing D -> y (B, T, D).
    """
    raise NotImplementedError("gpt_block: your code here")


def gpt_forward(
    tokens: Tensor,
    wte: Tensor,
    wpe: Tensor,
    blocks: list[dict[str, Tensor]],
    norm_f_weight: Tensor,
    norm_f_bias: Tensor,
    lm_head_weight: Tensor,
    n_heads: int,
) -> Tensor:
    """A small GPT: token and learned position embeddings, L pre-LN blocks, a final layer norm, a head.

        x_0 = wte[tokens] + wpe[0..T-1]
        x_l = gpt_block(x_{l-1}, **blocks[l-1])      l = 1..L
        logits = LN_f(x_L) W_head^T

    Shapes: tokens (B, T) int64 in [0, V), wte (V, D), wpe (T_max, D) with T <= T_max, blocks a list of L
    dicts keyed by gpt_block's weight names ("norm1_weight", "norm1_bias", "in_proj_weight", ...,
    "linear2_bias"; shapes as in gpt_block), norm_f_* (D,), lm_head_weight (V, D), n_heads an int
    -> logits (B, T, V).
    """
    raise NotImplementedError("gpt_forward: your code here")
