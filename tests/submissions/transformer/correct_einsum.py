"""A correct transformer.py in einsum style: additive -inf mask, heads split and merged with einsum."""

import math

import torch


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = torch.einsum("...td,...sd->...ts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + torch.zeros(mask.shape, dtype=scores.dtype).masked_fill(~mask, -math.inf)
    weights = scores.softmax(-1)
    return torch.einsum("...ts,...sd->...td", weights, v), weights


def causal_mask(T):
    t = torch.arange(T)
    return t[None, :] <= t[:, None]


def causal_self_attention(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, n_heads):
    B, T, D = x.shape
    hd = D // n_heads
    W = in_proj_weight.reshape(3, n_heads, hd, D)
    b = in_proj_bias.reshape(3, n_heads, hd)
    q, k, v = torch.einsum("btd,ched->cbhte", x, W) + b[:, None, :, None, :]
    y, weights = scaled_dot_product_attention(q, k, v, causal_mask(T))
    out = torch.einsum("bhte,fhe->btf", y, out_proj_weight.reshape(D, n_heads, hd)) + out_proj_bias
    return out, weights


def sinusoidal_positions(T, D):
    angles = torch.einsum(
        "t,i->ti",
        torch.arange(T, dtype=torch.float64),
        10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D),
    )
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(T, D).float()


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return torch.einsum("...d,d->...d", (x - mean) / (var + eps).sqrt(), weight) + bias


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


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
    h = layer_norm(x, norm1_weight, norm1_bias)
    x = x + causal_self_attention(h, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, n_heads)[0]
    h = gelu(
        torch.einsum("btd,fd->btf", layer_norm(x, norm2_weight, norm2_bias), linear1_weight) + linear1_bias
    )
    return x + torch.einsum("btf,df->btd", h, linear2_weight) + linear2_bias


def gpt_forward(tokens, wte, wpe, blocks, norm_f_weight, norm_f_bias, lm_head_weight, n_heads):
    x = torch.nn.functional.embedding(tokens, wte) + wpe[: tokens.shape[1]]
    for block in blocks:
        x = gpt_block(x, **block, n_heads=n_heads)
    return torch.einsum("btd,vd->btv", layer_norm(x, norm_f_weight, norm_f_bias), lm_head_weight)
