"""attention: a causal pre-LN transformer block, the non-recurrent control.

Sources: Vaswani et al. 2017 ("Attention is all you need": multi-head scaled dot-product
attention, sinusoidal positions), with the layer norm before each sublayer (pre-LN:
GPT-2, Radford et al. 2019; Xiong et al. 2020) and a causal mask (a decoder). One
``attention`` layer is one block; ``[model] layers = L`` stacks L of them. For a
layer's inputs x_t (D,), width H, ``heads`` heads of width d = H / heads::

    r_t  = x_t W_e + b_e + P_t                     the residual stream entering the block (probed);
                                                   P_t sinusoidal: P_{t,2i} = sin(t / 10000^{2i/H}),
                                                                   P_{t,2i+1} = cos(t / 10000^{2i/H})
    q, k, v = LN_1(r) W_q + b_q, LN_1(r) W_k + b_k, LN_1(r) W_v + b_v     split into heads
    a_t  = concat_heads( sum_{s <= t} softmax_s(q_t k_s / sqrt(d)) v_s ) W_o + b_o
    m_t  = r_t + a_t                               the residual stream after attention
    o_t  = m_t + GELU(LN_2(m_t) W_1 + b_1) W_2 + b_2     MLP of width 4H; the residual stream leaving the block
    y_t  = LN_f(o_t)                               the layer's output (the readout's, or the next layer's, input)

Initialisation: every W LeCun normal (flax's Dense default), biases zero, layer norms
scale 1 and bias 0 (GPT-2 draws N(0, 0.02) and scales the residual projections by
1/sqrt(2L); not here). GELU: the tanh approximation (flax's default, GPT-2's). No dropout.

Positions: sinusoidal, added at the input of every layer, so the parameter count does not
depend on the sequence length (``length_dependent = False``) and a model runs at any
length. Conventions that differ: a standard transformer embeds its input and adds the
positions once, then passes the residual stream from block to block; lrd's stack passes
each layer's output y to the next layer, so each layer has its own input map W_e and adds
the positions again (as the Universal Transformer adds its coordinate embedding at every
step, Dehghani et al. 2019). At ``layers = 1`` the two coincide.

Bidirectional: the backward direction (``reverse``) attends to s >= t instead of s <= t
(anti-causal), so a bidirectional attention layer sees the whole sequence, as a
bidirectional RNN does (its two halves merged by concatenation or sum).

Probe: there is no recurrent state. The probed "state" (named ``h`` in the tables, so the
figures treat it like the others) is the residual stream entering the block, r_t above:
the perturbation eps_t is added to r_t at every position, so dL/d eps_t = dL/dr_t, the
gradient with respect to position t's residual stream at that layer, through its own
position and every later position that attends to it. (The stream leaving the block, o_t,
reaches the loss only through its own position in the last layer: at a distance from the
scored positions its gradient is exactly zero, which says nothing about memory.)

Cost: the attention scores are (B, heads, T, T): memory and time grow as T^2, where the
recurrences grow as T; at T = 1000 with batch 16 and 2 heads the scores of one layer are
128 MB in float32, and backpropagation keeps them.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lrd.models.cells import Cell, Eps, register

MLP_FACTOR = 4  # the MLP's width, in units of H


def sinusoidal_positions(length: int, width: int) -> jax.Array:
    """P (T, H): P[t, 2i] = sin(t / 10000^(2i/H)), P[t, 2i+1] = cos(t / 10000^(2i/H)) (Vaswani et al. 2017)."""
    t = jnp.arange(length, dtype=jnp.float32)[:, None]  # (T, 1)
    i = jnp.arange(width)
    angle = t / 10000.0 ** ((2 * (i // 2)) / width)  # (T, H)
    return jnp.where(i % 2 == 0, jnp.sin(angle), jnp.cos(angle))


def attention_mask(length: int, reverse: bool) -> jax.Array:
    """(T, T) bool, True where query t may attend to key s: s <= t (causal), or s >= t when ``reverse``."""
    t = jnp.arange(length)
    return t[None, :] >= t[:, None] if reverse else t[None, :] <= t[:, None]


@register
class AttentionCell(Cell):
    heads: int = 2

    cell_name: ClassVar[str] = "attention"
    recurrent: ClassVar[bool] = False
    is_block: ClassVar[bool] = True  # a pre-LN transformer block: [model] block is dropped for it
    equations: ClassVar[str] = (
        "r = x W_e + b_e + P (sinusoidal); m = r + MHA_causal(LN_1(r)); o = m + MLP(LN_2(m)) (GELU, 4H); "
        "y = LN_f(o); probed: r, the residual stream entering the block"
    )
    source: ClassVar[str] = "Vaswani et al. 2017, pre-LN causal block (GPT-2), sinusoidal positions"

    @nn.compact
    def sequence(self, inputs: jax.Array, eps: Eps = None, reverse: bool = False) -> jax.Array:
        """inputs (B, T, D), eps {"h": (B, T, H)} -> y (B, T, H)."""
        B, T, _ = inputs.shape
        H, n_heads = self.hidden, self.heads
        d = H // n_heads
        r = nn.Dense(H, name="embed")(inputs) + sinusoidal_positions(T, H)  # (B, T, H)
        if eps is not None:  # the probe: the residual stream entering the block
            r = r + eps["h"]

        a = nn.LayerNorm(name="ln_1")(r)
        qkv = nn.Dense(3 * H, name="qkv")(a)  # (B, T, 3H)
        q, k, v = (z.reshape(B, T, n_heads, d) for z in jnp.split(qkv, 3, axis=-1))  # (B, T, heads, d) each
        scores = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(jnp.float32(d))  # (B, heads, T, T)
        scores = jnp.where(attention_mask(T, reverse), scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        heads = jnp.einsum("bhts,bshd->bthd", weights, v).reshape(B, T, H)  # (B, T, heads, d) -> (B, T, H)
        m = r + nn.Dense(H, name="out")(heads)

        z = nn.gelu(nn.Dense(MLP_FACTOR * H, name="mlp_in")(nn.LayerNorm(name="ln_2")(m)))  # (B, T, 4H)
        h = m + nn.Dense(H, name="mlp_out")(z)  # (B, T, H)
        return nn.LayerNorm(name="ln_f")(h)  # (B, T, H)
