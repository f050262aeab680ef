"""A correct transformer.py that masks after the softmax and then renormalises (mathematically exact)."""

import math

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights * mask
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights @ v, weights


def causal_mask(T):
    return torch.ones(T, T).tril().bool()


def causal_self_attention(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, n_heads):
    B, T, D = x.shape
    q, k, v = F.linear(x, in_proj_weight, in_proj_bias).split(D, dim=2)
    heads = [t.view(B, T, n_heads, D // n_heads).permute(0, 2, 1, 3) for t in (q, k, v)]
    y, weights = scaled_dot_product_attention(*heads, mask=causal_mask(T))
    y = y.permute(0, 2, 1, 3).contiguous().view(B, T, D)
    return F.linear(y, out_proj_weight, out_proj_bias), weights


def sinusoidal_positions(T, D):
    pos = torch.arange(T).unsqueeze(1).float()
    freq = torch.pow(10000.0, -torch.arange(0, D, 2).float() / D)
    P = torch.empty(T, D)
    P[:, 0::2] = torch.sin(pos * freq)
    P[:, 1::2] = torch.cos(pos * freq)
    return P


def layer_norm(x, weight, bias, eps=1e-5):
    var, mean = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return weight * (x - mean) / torch.sqrt(var + eps) + bias


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
    y = (
        x
        + causal_self_attention(
            layer_norm(x, norm1_weight, norm1_bias),
            in_proj_weight,
            in_proj_bias,
            out_proj_weight,
            out_proj_bias,
            n_heads,
        )[0]
    )
    h = F.gelu(
        F.linear(layer_norm(y, norm2_weight, norm2_bias), linear1_weight, linear1_bias), approximate="none"
    )
    return y + F.linear(h, linear2_weight, linear2_bias)


def gpt_forward(tokens, wte, wpe, blocks, norm_f_weight, norm_f_bias, lm_head_weight, n_heads):
    x = wte[tokens] + wpe[: tokens.size(1)].unsqueeze(0)
    for params in blocks:
        x = gpt_block(x, n_heads=n_heads, **params)
    return layer_norm(x, norm_f_weight, norm_f_bias) @ lm_head_weight.t()
