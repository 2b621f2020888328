#!/usr/bin/python3
"""phi3v_ref.py - independent plain-torch reference of Phi3VForCausalLM (Phi-3 / Phi-3.5-vision).

Written from the semantics of the remote code shipped with microsoft/Phi-3.5-vision-instruct
(configuration_phi3_v.py, modeling_phi3_v.py, image_embedding_phi3_v.py, image_processing_phi3_v.py,
processing_phi3_v.py); transformers is not installed here, and this file does not call the C++ code.
reference.py dispatches here for model_type "phi3_v"; pil_ref.py's "phi3_v" op calls preprocess().

Model (Phi3VModel.forward at batch 1, position_ids 0..T-1, eager attention):
  - input_ids < 0 (and > -1e9) mark image positions; ids are clamped to [0, vocab_size] for the
    embedding lookup and the image features are written into those positions in order (index_put).
  - image features: every crop [1 + hc*wc per image] through CLIPVisionModel, hidden_states[layer_idx]
    without CLS, then hd_feature_transform: 2x2 patch merge (channels ordered (row, col, C)), sub
    crops tiled to a (hc*12) x (wc*12) grid with sub_GN after each row, glb_GN, the global crop
    12 x 12 with sub_GN after each row, then img_projection = Linear, GELU(erf), Linear.
  - decoder: Phi3DecoderLayer (RMSNorm, fused qkv_proj split [q|k|v], RoPE rotate_half, GQA,
    softmax in float32, fused gate_up_proj: up * silu(gate)), final norm.
  - RoPE: rope_scaling null -> plain; "su"/"longrope"/"yarn": inv_freq = 1 / (ext * base^(2i/d)) with
    ext = long_factor if max(position_ids) + 1 > original_max_position_embeddings else short_factor,
    cos/sin times sqrt(1 + ln(s)/ln(orig)) (su) or 0.1 ln(s) + 1 (yarn), s = max_pos / orig (1 if <= 1).
  - sliding_window: the mask allows i - j < sliding_window (as Mistral's); irrelevant below it.
The vision tower is CLIP ViT-L/14-336 as in the remote code; img_processor.vision_config (a unime
extension, ignored by the remote code) overrides its sizes for tiny test checkpoints.

Processor: HD_transform (transpose when w < h, scale = max s with s*ceil(s/ratio) <= num_crops,
PIL bilinear resize to (s*336, int(s*336/ratio)), white padding of the height to a multiple of 336,
centred), ToTensor + Normalize, global image = F.interpolate(bicubic) to 336x336, crops row-major;
num_img_tokens = (hc*wc + 1)*144 + 1 + (hc + 1)*12.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

import reference as R

MAX_INPUT_ID = int(1e9)
CROP = 336  # the remote code's hard-coded crop size

PHI3V_DEFAULTS = dict(  # Phi3VConfig.__init__
    vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=None, hidden_act="silu", max_position_embeddings=4096,
    original_max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
    rope_theta=10000.0, rope_scaling=None, sliding_window=None, embd_layer="default", img_processor=None)
CLIP_L14_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    num_channels=3, image_size=336, patch_size=14, hidden_act="quick_gelu",
                    layer_norm_eps=1e-5, projection_dim=768)


# ---- config ----

def resolve(raw, where):
    c = R._with_defaults(raw, PHI3V_DEFAULTS, where)
    c["kind"] = "phi3_v"
    if c["num_key_value_heads"] is None:
        c["num_key_value_heads"] = c["num_attention_heads"]
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "original_max_position_embeddings"):
        if not isinstance(c[k], int) or c[k] <= 0:
            raise R.RefError(f"{where}: '{k}' must be a positive integer, got {c[k]!r}")
    if c["hidden_size"] % c["num_attention_heads"]:
        raise R.RefError(f"{where}: hidden_size must be divisible by num_attention_heads")
    c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    rs = c["rope_scaling"]
    if rs is not None:
        kind = rs.get("type", rs.get("rope_type"))
        if kind not in ("su", "longrope", "yarn"):
            raise R.RefError(f"{where}: rope_scaling type {kind!r} not supported (su, longrope, yarn)")
        for k in ("short_factor", "long_factor"):
            if not isinstance(rs.get(k), list) or len(rs[k]) != c["head_dim"] // 2:
                raise R.RefError(f"{where}: rope_scaling.{k} must be a list of head_dim // 2 numbers")
    R._check_act(c["hidden_act"], f"{where}: hidden_act")
    c["has_vision"] = isinstance(c["embd_layer"], dict)
    if c["has_vision"]:
        el = c["embd_layer"]
        if not (el.get("use_hd_transform") and el.get("with_learnable_separator")
                and el.get("hd_transform_order") == "sub_glb" and el.get("projection_cls") == "mlp"):
            raise R.RefError(f"{where}: embd_layer must use the HD transform, learnable separators, "
                             f"order sub_glb and an mlp projection")
        ip = c["img_processor"]
        if not isinstance(ip, dict) or ip.get("name") != "clip_vision_model" or "image_dim_out" not in ip:
            raise R.RefError(f"{where}: img_processor must be a clip_vision_model dict with image_dim_out")
        vraw = dict(CLIP_L14_336)
        vraw.update(ip.get("vision_config") or {})
        vc = R.resolve_vision_config(vraw, where + ": img_processor.vision_config")
        if vc["hidden_size"] != ip["image_dim_out"]:
            raise R.RefError(f"{where}: image_dim_out differs from the CLIP hidden size")
        c["vision_config"] = vc
        c["layer_idx"] = ip.get("layer_idx", -2)
        c["type_feature"] = ip.get("type_feature", "patch")
    return c


# ---- weights: Phi3VForCausalLM key names in registration order ----

def specs(c):
    D, V, I = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    H, Hkv, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    s = [("model.embed_tokens.weight", [V, D], "embed")]
    if c["has_vision"]:
        C = c["vision_config"]["hidden_size"]
        s += R.clip_vision_specs(c["vision_config"], "model.vision_embed_tokens.img_processor.vision_model.")
        s += [("model.vision_embed_tokens.glb_GN", [1, 1, 4 * C], "embed"),
              ("model.vision_embed_tokens.sub_GN", [1, 1, 1, 4 * C], "embed"),
              ("model.vision_embed_tokens.img_projection.0.weight", [D, 4 * C], "linear"),
              ("model.vision_embed_tokens.img_projection.0.bias", [D], "bias"),
              ("model.vision_embed_tokens.img_projection.2.weight", [D, D], "linear"),
              ("model.vision_embed_tokens.img_projection.2.bias", [D], "bias")]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s += [(p + "self_attn.o_proj.weight", [D, H * d], "linear"),
              (p + "self_attn.qkv_proj.weight", [(H + 2 * Hkv) * d, D], "linear"),
              (p + "mlp.gate_up_proj.weight", [2 * I, D], "linear"),
              (p + "mlp.down_proj.weight", [D, I], "linear"),
              (p + "input_layernorm.weight", [D], "norm_w"),
              (p + "post_attention_layernorm.weight", [D], "norm_w")]
    s.append(("model.norm.weight", [D], "norm_w"))
    if not c["tie_word_embeddings"]:
        s.append(("lm_head.weight", [V, D], "linear"))
    return s


# ---- decoder ----

def rope_cos_sin(c, position_ids, dtype):
    """Phi3RotaryEmbedding / Phi3SuScaledRotaryEmbedding / Phi3YarnScaledRotaryEmbedding."""
    d, base = c["head_dim"], c["rope_theta"]
    rs = c["rope_scaling"]
    shape = torch.arange(0, d, 2, dtype=torch.int64).float() / d
    scaling = 1.0
    if rs is None:
        inv_freq = 1.0 / (base ** shape)
    else:
        seq_len = int(position_ids.max()) + 1
        orig = c["original_max_position_embeddings"]
        ext = torch.tensor(rs["long_factor"] if seq_len > orig else rs["short_factor"], dtype=torch.float32)
        inv_freq = 1.0 / (ext * base ** shape)
        scale = c["max_position_embeddings"] / orig
        if scale > 1.0:
            kind = rs.get("type", rs.get("rope_type"))
            scaling = (math.sqrt(1 + math.log(scale) / math.log(orig)) if kind in ("su", "longrope")
                       else 0.1 * math.log(scale) + 1.0)
    work = R.upcast_dtype(dtype)
    freqs = (inv_freq[:, None].to(work) @ position_ids[None, :].to(work)).transpose(0, 1)  # [T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def decoder(c, W, embeds):
    """embeds [1, T, D] -> list of L+1 hidden states (last after the final norm)."""
    T = embeds.shape[1]
    dtype = embeds.dtype
    H, Hkv, d, I = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["intermediate_size"]
    cos, sin = rope_cos_sin(c, torch.arange(T), dtype)
    mask = R.additive_mask(T, dtype, sliding_window=c["sliding_window"])
    act = R.ACT2FN[c["hidden_act"]]
    h = embeds
    out = []
    for i in range(c["num_hidden_layers"]):
        out.append(h)
        p = f"model.layers.{i}."
        residual = h
        x = R.rms_norm(h, W[p + "input_layernorm.weight"], c["rms_norm_eps"])
        qkv = F.linear(x, W[p + "self_attn.qkv_proj.weight"])
        q = qkv[..., :H * d].view(1, T, H, d).transpose(1, 2)
        k = qkv[..., H * d:H * d + Hkv * d].view(1, T, Hkv, d).transpose(1, 2)
        v = qkv[..., H * d + Hkv * d:].view(1, T, Hkv, d).transpose(1, 2)
        q, k = R.apply_rope(q, cos, sin), R.apply_rope(k, cos, sin)
        k, v = R.repeat_kv(k, H // Hkv), R.repeat_kv(v, H // Hkv)
        a = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(d) + mask
        a = F.softmax(a, dim=-1, dtype=R.upcast_dtype(dtype)).to(v.dtype)
        a = torch.matmul(a, v).transpose(1, 2).reshape(1, T, H * d)
        h = residual + F.linear(a, W[p + "self_attn.o_proj.weight"])
        residual = h
        x = R.rms_norm(h, W[p + "post_attention_layernorm.weight"], c["rms_norm_eps"])
        gate, up = F.linear(x, W[p + "mlp.gate_up_proj.weight"]).chunk(2, dim=-1)
        h = residual + F.linear(up * act(gate), W[p + "mlp.down_proj.weight"])
    out.append(R.rms_norm(h, W["model.norm.weight"], c["rms_norm_eps"]))
    return out


# ---- image embedding (Phi3ImageEmbedding) ----

def _merge_2x2(feats, h_crop, w_crop):
    """reshape_hd_patches_2x2merge: [n_img*h_crop*w_crop, g*g, C] -> [n_img, h_crop*g/2, w_crop*g/2, 4C]."""
    N, L, C = feats.shape
    g = int(L ** 0.5)
    n_img = N // (h_crop * w_crop)
    x = feats.reshape(N, g, g, C).reshape(N, g // 2, 2, g // 2, 2, C).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(N, -1, 4 * C).reshape(n_img, h_crop, w_crop, g // 2, g // 2, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n_img, h_crop * g // 2, w_crop * g // 2, 4 * C)


def _newline(x, sub_gn):
    """add_image_newline: [n, h, w, 4C] -> [n, h*(w+1), 4C]."""
    n, h, w, C4 = x.shape
    return torch.cat([x, sub_gn.expand(n, h, -1, -1)], dim=2).reshape(n, -1, C4)


def image_features(c, W, pixel_values, image_sizes):
    """pixel_values [sum crops, 3, S, S] (per image: global, then its crops); image_sizes [[h, w]] HD."""
    vc = c["vision_config"]
    pre = "model.vision_embed_tokens."
    hs, _ = R.clip_vision_forward(vc, W, pre + "img_processor.vision_model.", pixel_values)
    feats = hs[c["layer_idx"]][:, 1:]                                   # type_feature "patch"
    S = vc["image_size"]
    out, off = [], 0
    for h, w in image_sizes:
        hc, wc = h // S, w // S
        crops = feats[off:off + 1 + hc * wc]
        glb = _newline(_merge_2x2(crops[:1], 1, 1), W[pre + "sub_GN"])[0]
        sub = _newline(_merge_2x2(crops[1:], hc, wc), W[pre + "sub_GN"])[0]
        out.append(torch.cat([sub, W[pre + "glb_GN"].squeeze(0), glb]))
        off += 1 + hc * wc
    if off != pixel_values.shape[0]:
        raise R.RefError(f"pixel_values hold {pixel_values.shape[0]} crops; the image_sizes need {off}")
    x = torch.cat(out, 0)
    x = F.linear(x, W[pre + "img_projection.0.weight"], W[pre + "img_projection.0.bias"])
    return F.linear(F.gelu(x), W[pre + "img_projection.2.weight"], W[pre + "img_projection.2.bias"])


def run_one(c, W, item, i, dtype, out):
    where = f"input {i}"
    ids = item.get("input_ids")
    if not isinstance(ids, list) or not ids:
        raise R.RefError(f"{where}: phi3_v models need a non-empty input_ids list")
    t = torch.tensor([ids], dtype=torch.int64)
    if int(t.max()) >= c["vocab_size"]:
        raise R.RefError(f"{where}: token id {int(t.max())} outside vocab_size {c['vocab_size']}")
    positions = torch.nonzero((t < 0) & (t > -MAX_INPUT_ID), as_tuple=True)
    embeds = F.embedding(t.clamp(0, c["vocab_size"]), W["model.embed_tokens.weight"])
    px = item.get("pixel_values")
    if len(positions[0]):
        if px is None or not c["has_vision"]:
            raise R.RefError(f"{where}: negative ids (image positions) but no pixel_values / image embedding")
        sizes = item.get("image_sizes")
        if not (isinstance(sizes, list) and all(isinstance(s, list) and len(s) == 2 for s in sizes)):
            raise R.RefError(f"{where}: phi3_v pixel_values need image_sizes [[h, w], ...] (HD sizes)")
        feats = image_features(c, W, torch.as_tensor(px).to(dtype), sizes)
        if feats.shape[0] != len(positions[0]):
            raise R.RefError(f"{where}: {len(positions[0])} image positions for {feats.shape[0]} image features")
        embeds = embeds.index_put(positions, feats.to(embeds.dtype), accumulate=False)
        out[f"image_features.{i}"] = R._f32(feats)
    hs = decoder(c, W, embeds)
    out[f"hidden.{i}"] = R._f32(hs[-1][0])
    out[f"emb.{i}"] = F.normalize(R._f32(hs[-1][0, -1]), p=2.0, dim=-1)


# ---- processor (Phi3VImageProcessor.preprocess for one image) ----

def preprocess(src, cfg):
    """-> (float32 [1 + hc*wc, 3, 336, 336], {"image_size": [H, W], "num_image_tokens": n})."""
    from PIL import Image
    img = Image.open(src).convert("RGB")
    hd_num = cfg.get("num_crops", 1)
    mean = cfg.get("image_mean") or [0.48145466, 0.4578275, 0.40821073]
    std = cfg.get("image_std") or [0.26862954, 0.26130258, 0.27577711]
    # HD_transform
    width, height = img.size
    trans = width < height
    if trans:
        img = img.transpose(Image.TRANSPOSE)
        width, height = img.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * CROP)
    new_h = int(new_w / ratio)
    img = img.resize((new_w, new_h), Image.BILINEAR)     # torchvision resize of a PIL image
    tar = int(np.ceil(new_h / CROP) * CROP)                 # padding_336, white, centred vertically
    top = int((tar - new_h) / 2)
    canvas = Image.new("RGB", (new_w, tar), (255, 255, 255))
    canvas.paste(img, (0, top))
    img = canvas.transpose(Image.TRANSPOSE) if trans else canvas
    # ToTensor + Normalize
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(mean, dtype=torch.float32)[:, None, None]) / torch.tensor(std, dtype=torch.float32)[:, None, None]
    glb = F.interpolate(x[None].float(), size=(CROP, CROP), mode="bicubic")
    h, w = x.shape[1], x.shape[2]
    crops = x.reshape(1, 3, h // CROP, CROP, w // CROP, CROP).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, CROP, CROP)
    arr = torch.cat([glb, crops], 0).contiguous().numpy().astype(np.float32)
    n = int((h // CROP * w // CROP + 1) * 144 + 1 + (h // CROP + 1) * 12)
    return arr, {"image_size": [h, w], "num_image_tokens": n}
