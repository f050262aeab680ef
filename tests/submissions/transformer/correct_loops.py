"""A correct transformer.py with loops: one head at a time, a large negative fill instead of -inf, rsqrt."""

import math

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.size(-1)))
    if mask is not None:
        scores = torch.where(mask, scores, torch.full_like(scores, -1e9))
    weights = F.softmax(scores, dim=-1)
    return torch.matmul(weights, v), weights


def causal_mask(T):
    mask = torch.zeros(T, T, dtype=torch.bool)
    for t in range(T):
        for s in range(t + 1):
            mask[t, s] = True
    return mask


def causal_self_attention(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, n_heads):
    B, T, D = x.shape
    hd = D // n_heads
    W_q, W_k, W_v = in_proj_weight.chunk(3, dim=0)
    b_q, b_k, b_v = in_proj_bias.chunk(3, dim=0)
    mask = causal_mask(T)
    outs, all_weights = [], []
    for h in range(n_heads):
        sl = slice(h * hd, (h + 1) * hd)
        q = F.linear(x, W_q[sl], b_q[sl])
        k = F.linear(x, W_k[sl], b_k[sl])
        v = F.linear(x, W_v[sl], b_v[sl])
        y, w = scaled_dot_product_attention(q, k, v, mask)
        outs.append(y)
        all_weights.append(w)
    y = torch.cat(outs, dim=-1)
    return F.linear(y, out_proj_weight, out_proj_bias), torch.stack(all_weights, dim=1)


def sinusoidal_positions(T, D):
    P = torch.zeros(T, D)
    for t in range(T):
        for i in range(0, D, 2):
            angle = t / 10000 ** (i / D)
            P[t, i] = math.sin(angle)
            if i + 1 < D:
                P[t, i + 1] = math.cos(angle)
    return P


def layer_norm(x, weight, bias, eps=1e-5):
    centred = x - x.mean(-1, keepdim=True)
    return centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * weight + bias


def gpt_block(
    x,
    norm1_weight,
    norm1_bias,
    in_proj_weight,
    in_proj_bias,
    out_proj_weight,
    out_proj_bias,
    norm2_weight,
    norm2_bias,
    linear1_weight,
    linear1_bias,
    linear2_weight,
    linear2_bias,
    n_heads,
):
    attn, _ = causal_self_attention(
        layer_norm(x, norm1_weight, norm1_bias),
        in_proj_weight,
        in_proj_bias,
        out_proj_weight,
        out_proj_bias,
        n_heads,
    )
    x = x + attn
    mlp = F.linear(
        F.gelu(F.linear(layer_norm(x, norm2_weight, norm2_bias), linear1_weight, linear1_bias)),
        linear2_weight,
        linear2_bias,
    )
    return x + mlp


NAMES = [
    "norm1_weight",
    "norm1_bias",
    "in_proj_weight",
    "in_proj_bias",
    "out_proj_weight",
    "out_proj_bias",
    "norm2_weight",
    "norm2_bias",
    "linear1_weight",
    "linear1_bias",
    "linear2_weight",
    "linear2_bias",
]


def gpt_forward(tokens, wte, wpe, blocks, norm_f_weight, norm_f_bias, lm_head_weight, n_heads):
    B, T = tokens.shape
    x = torch.stack([torch.stack([wte[tokens[b, t]] + wpe[t] for t in range(T)]) for b in range(B)])
    for block in blocks:
        x = gpt_block(x, *[block[n] for n in NAMES], n_heads)
    return F.linear(layer_norm(x, norm_f_weight, norm_f_bias), lm_head_weight)
