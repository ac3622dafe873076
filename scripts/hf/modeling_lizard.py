# coding=utf-8
"""Lizard student for Hugging Face transformers (trust_remote_code), written into every export.

`lizard export` copies this file next to model.safetensors; config.json's auto_map points
AutoConfig at LizardConfig and AutoModelForCausalLM at LizardForCausalLM, so

    AutoModelForCausalLM.from_pretrained(EXPORT, trust_remote_code=True, dtype=torch.float32)

loads the linearized model. The maths is DESIGN.md section 2 of the lizard project, in the naive
O(T^2) masked form (correct, not fast), computed in float32 whatever the weight dtype:

  per query head h (kv head h // (H / Hkv); gate index 0, or h with gate "per_head"):
    phi(u) = [softmax(u), softmax(-u)]        (feature_activation "softmax")
           = [exp(u - m), exp(-u - m)], m = max_i |u_i|   ("exp")
    phi_q = phi(q_t Wq[h]), phi_k = phi(k_s Wk[h])        (Wq, Wk: D x F, keys after the GQA repeat)
    a_t = logsigmoid(x_t . w_g + b_g), b_t = sum_{s<=t} a_s  (x: the normed layer input)
    g_t = sum_{s<=t} e^{b_t-b_s} (phi_q.phi_k) v_s / max(sum_{s<=t} e^{b_t-b_s} phi_q.phi_k, eps)
    l_t = sum_{t-w<s<=t} e^{c_ts} v_s / (sum_j e^{tau_j} + sum_{t-w<s<=t} e^{c_ts}),
          c_ts = q~_t.k~_s / sqrt(D), q~, k~ = RoPE(q, k) with window_rope, else q, k
    y_t = g_t + alpha l_t ("sum") or (g_t + |alpha| l_t) / (1 + |alpha|) ("convex"); y_t = g_t
          when window = 0
  then o_proj. Layers in softmax_layers keep the teacher's causal softmax attention with RoPE
  (and the base model's sliding window). The student's global branch has no RoPE.

Everything the maths needs is read from config.lizard, which `lizard export` writes resolved
(RoPE, q/k/v bias, softmax sliding window included), so no base-model config dialect is parsed
here. No key/value cache: generation recomputes the prefix at every step.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

try:  # transformers >= 5 spells it PreTrainedConfig; 4.x has PretrainedConfig
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:
    from transformers import PretrainedConfig as _BaseConfig
try:  # since transformers 4.50 a model must inherit GenerationMixin itself to generate
    from transformers import GenerationMixin as _GenerationMixin
except ImportError:
    _GenerationMixin = object


# Defaults of the "lizard" section (the paper's values), for configs built by hand.
_LIZARD_DEFAULTS = {
    "base_model_type": "llama",
    "preset": "paper",
    "feature_dim": 128,
    "feature_activation": "softmax",
    "gate": "shared",
    "gate_bias_init": 0.0,
    "window": 128,
    "sinks": 4,
    "sinks_per_head": False,
    "combine": "sum",
    "window_rope": False,
    "eps": 1e-6,
    "chunk": 64,
    "softmax_layers": [],
    "qkv_bias": False,
    "softmax_sliding_window": 0,
    "rope": {"rope_type": "default", "rope_theta": 10000.0},
}


class LizardConfig(_BaseConfig):
    """A Llama-family architecture plus the `lizard` section of a lizard export."""

    model_type = "lizard"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=None,
        head_dim=None,
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        lizard=None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.max_position_embeddings = max_position_embeddings
        section = dict(_LIZARD_DEFAULTS)
        section.update(lizard or {})
        self.lizard = section
        # The base model's RoPE fields stay as they were written (for tools that read them);
        # the model reads the resolved lizard["rope"]. They are kept away from the base class,
        # whose RoPE standardisation differs between transformers versions.
        rope_fields = {k: kwargs.pop(k) for k in ("rope_theta", "rope_scaling", "rope_parameters") if k in kwargs}
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.tie_word_embeddings = tie_word_embeddings
        for key, value in rope_fields.items():
            try:
                setattr(self, key, value)
            except Exception:  # a read-only property in some versions: the model does not need it
                pass


# ---------------------------------------------------------------------------------------------
# The maths (float32 tensors in, float32 out)
# ---------------------------------------------------------------------------------------------


def rope_cos_sin(rope, head_dim, T, device):
    """cos, sin [T, head_dim/2] in the rotate_half layout (inverse frequencies in float64)."""
    theta = float(rope.get("rope_theta", 10000.0))
    half = head_dim // 2
    inv = [1.0 / theta ** (2.0 * i / head_dim) for i in range(half)]
    if rope.get("rope_type", "default") == "llama3":
        factor = float(rope["factor"])
        low, high = float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
        old_len = float(rope["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        for i in range(half):
            wavelen = 2 * math.pi / inv[i]
            if wavelen < high_wavelen:
                continue
            if wavelen > low_wavelen:
                inv[i] = inv[i] / factor
                continue
            smooth = (old_len / wavelen - low) / (high - low)
            inv[i] = (1 - smooth) * inv[i] / factor + smooth * inv[i]
    elif rope.get("rope_type", "default") != "default":
        raise ValueError("lizard: rope_type %r is not supported" % rope.get("rope_type"))
    pos = torch.arange(T, dtype=torch.float64)
    ang = pos[:, None] * torch.tensor(inv, dtype=torch.float64)[None, :]
    return torch.cos(ang).float().to(device), torch.sin(ang).float().to(device)


def apply_rope(x, cos, sin):
    """x [B, T, H, D] rotated by position (rotate_half layout)."""
    half = x.shape[-1] // 2
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def feature_map(u, activation):
    """u [..., F] -> phi [..., 2F]."""
    if activation == "softmax":
        return torch.cat([torch.softmax(u, dim=-1), torch.softmax(-u, dim=-1)], dim=-1)
    if activation == "exp":
        m = u.abs().amax(dim=-1, keepdim=True)
        return torch.cat([torch.exp(u - m), torch.exp(-u - m)], dim=-1)
    raise ValueError("lizard: feature_activation %r is not supported" % activation)


def causal_window_mask(T, window, device):
    """[T, T] bool: key s visible from query t (s <= t, and t - s < window when window > 0)."""
    t = torch.arange(T, device=device)[:, None]
    s = torch.arange(T, device=device)[None, :]
    mask = s <= t
    if window > 0:
        mask = mask & (s > t - window)
    return mask


def softmax_attention(q, k, v, cos, sin, window):
    """The teacher: causal softmax attention with RoPE. q [B,T,H,D], k/v [B,T,Hkv,D] -> [B,T,H,D]."""
    B, T, H, D = q.shape
    rep = H // k.shape[2]
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    scores = scores.masked_fill(~causal_window_mask(T, window, q.device), float("-inf"))
    return torch.einsum("bhts,bshd->bthd", torch.softmax(scores, dim=-1), v)


def lizard_attention(lz, q, k, v, x, p, cos, sin):
    """The student (see the module docstring). q [B,T,H,D], k/v [B,T,Hkv,D], x [B,T,dm] (the
    normed layer input, read by the gate), p: LizardParameters. Returns y [B,T,H,D]."""
    B, T, H, D = q.shape
    rep = H // k.shape[2]
    k_r, v_r = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    # ---- global branch: gated linear attention over the Hedgehog features ----
    pq = feature_map(torch.einsum("bthd,hdf->bthf", q, p.feature_map_q.float()), lz["feature_activation"])
    pk = feature_map(torch.einsum("bthd,hdf->bthf", k_r, p.feature_map_k.float()), lz["feature_activation"])
    z = torch.einsum("btd,gd->btg", x, p.gate_weight.float()) + p.gate_bias.float()  # [B,T,Hg]
    bcum = torch.cumsum(F.logsigmoid(z), dim=1).permute(0, 2, 1)  # [B,Hg,T]
    causal = causal_window_mask(T, 0, q.device)
    # exp(b_t - b_s) only where s <= t (the exponent is <= 0 there; elsewhere it could overflow)
    decay = torch.exp((bcum[..., :, None] - bcum[..., None, :]).masked_fill(~causal, float("-inf")))
    att = torch.einsum("bthf,bshf->bhts", pq, pk) * decay  # [B,H,T,T] (Hg = 1 broadcasts)
    num = torch.einsum("bhts,bshd->bthd", att, v_r)
    den = att.sum(dim=-1).permute(0, 2, 1)[..., None]  # [B,T,H,1]
    g = num / den.clamp_min(float(lz["eps"]))
    window = int(lz["window"])
    if window <= 0:
        return g
    # ---- window branch: softmax over the last `window` keys and the sink logits ----
    if lz["window_rope"]:
        qw, kw = apply_rope(q, cos, sin), apply_rope(k, cos, sin).repeat_interleave(rep, dim=2)
    else:
        qw, kw = q, k_r
    scores = torch.einsum("bthd,bshd->bhts", qw, kw) / math.sqrt(D)
    scores = scores.masked_fill(~causal_window_mask(T, window, q.device), float("-inf"))
    if getattr(p, "sinks", None) is not None:
        tau = p.sinks.float()  # [1, m] or [H, m]
        sinks = tau[None, :, None, :].expand(B, H, T, tau.shape[-1])
        probs = torch.softmax(torch.cat([scores, sinks], dim=-1), dim=-1)[..., :T]
    else:
        probs = torch.softmax(scores, dim=-1)
    l = torch.einsum("bhts,bshd->bthd", probs, v_r)
    alpha = p.alpha.float()
    if lz["combine"] == "convex":
        a = alpha.abs()
        return (g + a * l) / (1 + a)
    if lz["combine"] != "sum":
        raise ValueError("lizard: combine %r is not supported" % lz["combine"])
    return g + alpha * l


# ---------------------------------------------------------------------------------------------
# Modules (parameter names match lizard's export: model.layers.N.self_attn.lizard.*)
# ---------------------------------------------------------------------------------------------


class LizardParameters(nn.Module):
    """Feature maps, gate, sinks and alpha of one layer, at their initial values (identity
    feature maps, w_g = 0, b_g = gate_bias_init, tau = 0, alpha = 1) until loaded."""

    def __init__(self, lz, H, D, dm):
        super().__init__()
        F_ = int(lz["feature_dim"])
        eye = torch.zeros(H, D, F_)
        for i in range(min(D, F_)):
            eye[:, i, i] = 1.0
        self.feature_map_q = nn.Parameter(eye.clone())
        self.feature_map_k = nn.Parameter(eye.clone())
        Hg = H if lz["gate"] == "per_head" else 1
        self.gate_weight = nn.Parameter(torch.zeros(Hg, dm))
        self.gate_bias = nn.Parameter(torch.full((Hg,), float(lz["gate_bias_init"])))
        if int(lz["window"]) > 0 and int(lz["sinks"]) > 0:
            self.sinks = nn.Parameter(torch.zeros(H if lz["sinks_per_head"] else 1, int(lz["sinks"])))
        else:
            self.sinks = None
        self.alpha = nn.Parameter(torch.ones(1))


class LizardAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        lz = config.lizard
        self.lz = lz
        self.H, self.Hkv, self.D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        d = config.hidden_size
        bias = bool(lz["qkv_bias"])
        self.q_proj = nn.Linear(d, self.H * self.D, bias=bias)
        self.k_proj = nn.Linear(d, self.Hkv * self.D, bias=bias)
        self.v_proj = nn.Linear(d, self.Hkv * self.D, bias=bias)
        self.o_proj = nn.Linear(self.H * self.D, d, bias=False)
        self.linearized = layer_idx not in [int(i) for i in lz["softmax_layers"]]
        if self.linearized:
            self.lizard = LizardParameters(lz, self.H, self.D, d)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        xf = x.float()
        q = self.q_proj(x).float().view(B, T, self.H, self.D)
        k = self.k_proj(x).float().view(B, T, self.Hkv, self.D)
        v = self.v_proj(x).float().view(B, T, self.Hkv, self.D)
        if self.linearized:
            y = lizard_attention(self.lz, q, k, v, xf, self.lizard, cos, sin)
        else:
            y = softmax_attention(q, k, v, cos, sin, int(self.lz["softmax_sliding_window"]))
        return self.o_proj(y.reshape(B, T, self.H * self.D).to(x.dtype))


class LizardRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class LizardMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LizardDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.input_layernorm = LizardRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LizardAttention(config, layer_idx)
        self.post_attention_layernorm = LizardRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LizardMLP(config)

    def forward(self, x, cos, sin):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class LizardPreTrainedModel(PreTrainedModel):
    config_class = LizardConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["LizardDecoderLayer"]
    _keep_in_fp32_modules = ["lizard"]
    # No tied parameters: tied embeddings are read from embed_tokens directly (a mapping, as
    # transformers 5 expects; an empty one is also fine for 4.x).
    _tied_weights_keys = {}

    def get_expanded_tied_weights_keys(self, all_submodels=False):
        return {}

    def _init_weights(self, module):
        # Every tensor comes from the export; the constructors already give sensible values
        # (Lizard parameters at their initialisation) for a model built from a config alone.
        pass


class LizardModel(LizardPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([LizardDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LizardRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids):
        x = self.embed_tokens(input_ids)
        T = input_ids.shape[1]
        cos, sin = rope_cos_sin(self.config.lizard["rope"], self.config.head_dim, T, x.device)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class LizardForCausalLM(LizardPreTrainedModel, _GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = LizardModel(config)
        # Tied embeddings are computed from embed_tokens directly (no lm_head module), so no
        # version-specific weight-tying machinery is involved.
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None, **kwargs):
        if input_ids is None:
            raise ValueError("LizardForCausalLM needs input_ids")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("LizardForCausalLM: padding (attention_mask with zeros) is not supported")
        hidden = self.model(input_ids)
        if self.lm_head is not None:
            logits = self.lm_head(hidden)
        else:
            logits = F.linear(hidden, self.model.embed_tokens.weight)
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1, :].float().reshape(-1, logits.shape[-1])
            loss = F.cross_entropy(shift_logits, labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=None)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # No cache: the whole sequence is recomputed at every step.
        return {"input_ids": input_ids, "attention_mask": attention_mask}


__all__ = ["LizardConfig", "LizardForCausalLM", "LizardModel", "LizardPreTrainedModel"]
