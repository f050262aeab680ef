"""Correct values from kernels looked up by names built at run time and then unwrapped, which the worker's
tracer cannot see: the raw kernel inside torch.ops.aten._scaled_dot_product_attention_math (._op) and the
function behind the worker's wrapper of torch.layer_norm (.__wrapped__, where a wrapper keeps one). The
source scan reports the unwrapping."""

import math

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(q, k, v, mask=None):
    bias = None if mask is None else torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
    kernel = getattr(torch.ops.aten, "_scaled_dot_product_" + "attention_math")._op
    return kernel(q, k, v, attn_mask=bias)  # (output, weights)


def causal_mask(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def causal_self_attention(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, n_heads):
    B, T, D = x.shape
    hd = D // n_heads
    qkv = x @ in_proj_weight.T + in_proj_bias
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
    q = q.reshape(B, T, n_heads, hd).transpose(1, 2)
    k = k.reshape(B, T, n_heads, hd).transpose(1, 2)
    v = v.reshape(B, T, n_heads, hd).transpose(1, 2)
    y, weights = scaled_dot_product_attention(q, k, v, causal_mask(T))
    y = y.transpose(1, 2).reshape(B, T, D)
    return y @ out_proj_weight.T + out_proj_bias, weights


def sinusoidal_positions(T, D):
    pos = torch.arange(T, dtype=torch.float32)[:, None]
    div = torch.exp(-math.log(10000.0) * torch.arange(0, D, 2, dtype=torch.float32) / D)
    P = torch.zeros(T, D)
    P[:, 0::2] = torch.sin(pos * div)
    P[:, 1::2] = torch.cos(pos * div)
    return P


def layer_norm(x, weight, bias, eps=1e-5):
    kernel = getattr(torch, "layer" + "_norm")
    return getattr(kernel, "__wrapped__", kernel)(x, (x.shape[-1],), weight, bias, eps)


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
    a, _ = causal_self_attention(
        layer_norm(x, norm1_weight, norm1_bias),
        in_proj_weight,
        in_proj_bias,
        out_proj_weight,
        out_proj_bias,
        n_heads,
    )
    x = x + a
    h = F.gelu(layer_norm(x, norm2_weight, norm2_bias) @ linear1_weight.T + linear1_bias)
    return x + h @ linear2_weight.T + linear2_bias


def gpt_forward(tokens, wte, wpe, blocks, norm_f_weight, norm_f_bias, lm_head_weight, n_heads):
    T = tokens.shape[1]
    x = wte[tokens] + wpe[:T]
    for b in blocks:
        x = gpt_block(
            x,
            b["norm1_weight"],
            b["norm1_bias"],
            b["in_proj_weight"],
            b["in_proj_bias"],
            b["out_proj_weight"],
            b["out_proj_bias"],
            b["norm2_weight"],
            b["norm2_bias"],
            b["linear1_weight"],
            b["linear1_bias"],
            b["linear2_weight"],
            b["linear2_bias"],
            n_heads,
        )
    return layer_norm(x, norm_f_weight, norm_f_bias) @ lm_head_weight.T
