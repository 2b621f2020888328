#!/usr/bin/python3
"""reference.py - independent plain-torch re-implementation of the Hugging Face forward passes.

Mirrors transformers' modeling code line by line (HF is not installable here):
  - LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM  (models/{llama,mistral,qwen2}/modeling_*.py,
    modeling_rope_utils.py for rope_type default / linear / llama3, masking_utils.py for sliding windows)
  - CLIPVisionModel / CLIPModel                                (models/clip/modeling_clip.py)
  - LlavaForConditionalGeneration, both key layouts           (models/llava/modeling_llava.py)
  - LlavaNextForConditionalGeneration, both key layouts       (models/llava_next/modeling_llava_next.py:
    image_size_to_num_patches, get_anyres_image_grid_shape, unpad_image, pack_image_features)
  - Qwen2VLForConditionalGeneration, both key layouts         (models/qwen2_vl/modeling_qwen2_vl.py: the
    vision transformer with 2-D rotary + PatchMerger, get_rope_index, M-RoPE)
  - Phi3VForCausalLM (Phi-3.5-vision remote code)              (phi3v_ref.py)
with the config-class defaults of configuration_{llama,mistral,qwen2,clip,llava,llava_next,qwen2_vl}.py
(see README.md).

Usage:
  reference.py --model DIR --inputs IN.json --output REF.safetensors [--dtype float32|bfloat16|float64]
  reference.py --model DIR --print-config          # resolved config (all defaults applied), as JSON

Each input runs alone: batch 1, no padding, position ids 0..T-1. Attention is HF's "eager" path
(matmul * scale + additive mask, softmax in float32, cast back). Output names: see README.md.

Legend: T tokens, D hidden_size, H heads, Hkv kv heads, d head_dim, I intermediate_size,
        V vocab_size, N images, P patches, Dv vision hidden, F image features per image.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # keep tests/gen free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


class RefError(Exception):
    """Bad model directory or inputs: printed as one 'error: ...' line, exit status 1."""


# ---------------------------------------------------------------------------------------------
# ---- config: HF class defaults (configuration_*.py __init__ signatures) ----
# ---------------------------------------------------------------------------------------------

LLAMA_DEFAULTS = dict(  # LlamaConfig
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
    max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0,
    rope_scaling=None, attention_bias=False, mlp_bias=False)
MISTRAL_DEFAULTS = dict(  # MistralConfig
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
    max_position_embeddings=4096 * 32, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_theta=10000.0, rope_scaling=None, sliding_window=4096)
QWEN2_DEFAULTS = dict(  # Qwen2Config
    vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=32, head_dim=None, hidden_act="silu",
    max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0,
    rope_scaling=None, use_sliding_window=False, sliding_window=4096, max_window_layers=28,
    layer_types=None)
CLIP_VISION_DEFAULTS = dict(  # CLIPVisionConfig
    hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12,
    num_attention_heads=12, num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu",
    layer_norm_eps=1e-5)
CLIP_TEXT_DEFAULTS = dict(  # CLIPTextConfig
    vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512,
    num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
CLIP_DEFAULTS = dict(projection_dim=512, logit_scale_init_value=2.6592)  # CLIPConfig
LLAVA_DEFAULTS = dict(  # LlavaConfig
    image_token_index=32000, projector_hidden_act="gelu", vision_feature_select_strategy="default",
    vision_feature_layer=-2, image_seq_length=576, multimodal_projector_bias=True,
    tie_word_embeddings=False)
# LlavaConfig(vision_config=None) builds this CLIPVisionConfig (llava-1.5's CLIP ViT-L/14-336).
LLAVA_VISION_WHEN_MISSING = dict(intermediate_size=4096, hidden_size=1024, patch_size=14,
                                 image_size=336, num_hidden_layers=24, num_attention_heads=16,
                                 projection_dim=768)
LLAVA_NEXT_DEFAULTS = dict(LLAVA_DEFAULTS)  # LlavaNextConfig
LLAVA_NEXT_DEFAULTS["image_grid_pinpoints"] = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
QWEN2VL_TEXT_DEFAULTS = dict(QWEN2_DEFAULTS)  # Qwen2VLConfig (text part)
QWEN2VL_TEXT_DEFAULTS.update(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                             num_attention_heads=64, num_key_value_heads=8, rms_norm_eps=1e-5,
                             rope_theta=1000000.0, max_window_layers=80)
QWEN2VL_VISION_DEFAULTS = dict(depth=32, embed_dim=1280, hidden_size=3584, hidden_act="quick_gelu",
                               mlp_ratio=4, num_heads=16, in_channels=3, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2)  # Qwen2VLVisionConfig
QWEN2VL_TOKEN_DEFAULTS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                              vision_end_token_id=151653)
TEXT_DEFAULTS = {"llama": LLAMA_DEFAULTS, "mistral": MISTRAL_DEFAULTS, "qwen2": QWEN2_DEFAULTS}


def _with_defaults(raw, defaults, where):
    if not isinstance(raw, dict):
        raise RefError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    out = dict(defaults)
    out.update(raw)
    return out


def _rope_params(c, where):
    """rope_theta + rope_scaling (transformers 4.x) or rope_parameters (5.x) -> one dict."""
    if isinstance(c.get("rope_parameters"), dict):
        rp = dict(c["rope_parameters"])
        rp.setdefault("rope_theta", c.get("rope_theta", 10000.0))
    else:
        rp = dict(c.get("rope_scaling") or {})
        rp["rope_theta"] = c["rope_theta"]
    # BC: 'type' was renamed 'rope_type' (configuration_llama.py)
    rp["rope_type"] = rp.get("rope_type", rp.get("type", "default"))
    rp.pop("type", None)
    kind = rp["rope_type"]
    if rp.get("partial_rotary_factor", 1.0) != 1.0:
        raise RefError(f"{where}: partial_rotary_factor != 1 is not supported by the reference")
    if kind == "linear":
        need = ["factor"]
    elif kind == "llama3":
        need = ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
    elif kind == "default":
        need = []
    else:
        raise RefError(f"{where}: rope_type '{kind}' is not supported by the reference "
                       f"(supported: default, linear, llama3)")
    for k in need:
        if not isinstance(rp.get(k), (int, float)):
            raise RefError(f"{where}: rope_scaling type '{kind}' needs numeric '{k}', got {rp.get(k)!r}")
    return rp


def resolve_text_config(raw, where, defaults=None):
    model_type = raw.get("model_type", "llama")
    if model_type not in TEXT_DEFAULTS:
        raise RefError(f"{where}: model_type '{model_type}' not supported; expected one of "
                       f"{sorted(TEXT_DEFAULTS)}")
    c = _with_defaults(raw, defaults or TEXT_DEFAULTS[model_type], where)
    c["model_type"] = model_type
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads"):
        if not isinstance(c[k], int) or c[k] <= 0:
            raise RefError(f"{where}: '{k}' must be a positive integer, got {c[k]!r}")
    if c["num_key_value_heads"] is None:  # BC in every decoder config class
        c["num_key_value_heads"] = c["num_attention_heads"]
    if c["num_attention_heads"] % c["num_key_value_heads"]:
        raise RefError(f"{where}: num_attention_heads={c['num_attention_heads']} is not a multiple of "
                       f"num_key_value_heads={c['num_key_value_heads']}")
    if c.get("head_dim") is None:
        c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    c["rope"] = _rope_params(c, where)
    L = c["num_hidden_layers"]
    if model_type == "llama":
        c["layer_types"] = ["full_attention"] * L
        c["sliding_window"] = None
        c["qkv_bias"] = c["o_bias"] = bool(c["attention_bias"])
    elif model_type == "mistral":
        sw = c["sliding_window"]
        c["layer_types"] = ["full_attention" if sw is None else "sliding_attention"] * L
        c["qkv_bias"] = c["o_bias"] = c["mlp_bias"] = False
    else:  # qwen2: Qwen2Config sets sliding_window = None unless use_sliding_window
        if not c["use_sliding_window"]:
            c["sliding_window"] = None
        if c.get("layer_types") is None:
            c["layer_types"] = ["sliding_attention" if c["sliding_window"] is not None
                                and i >= c["max_window_layers"] else "full_attention"
                                for i in range(L)]
        c["qkv_bias"], c["o_bias"], c["mlp_bias"] = True, False, False
    if len(c["layer_types"]) != L:
        raise RefError(f"{where}: layer_types has {len(c['layer_types'])} entries; expected {L}")
    if "sliding_attention" in c["layer_types"] and not (isinstance(c["sliding_window"], int)
                                                         and c["sliding_window"] > 0):
        raise RefError(f"{where}: sliding_window must be a positive integer, got {c['sliding_window']!r}")
    _check_act(c["hidden_act"], f"{where}: hidden_act")
    return c


def resolve_vision_config(raw, where, defaults=CLIP_VISION_DEFAULTS):
    model_type = raw.get("model_type", "clip_vision_model")
    if model_type != "clip_vision_model":
        raise RefError(f"{where}: vision model_type '{model_type}' not supported; expected clip_vision_model")
    c = _with_defaults(raw, defaults, where)
    c["model_type"] = model_type
    if c["image_size"] % c["patch_size"]:
        raise RefError(f"{where}: image_size={c['image_size']} is not a multiple of patch_size={c['patch_size']}")
    if c["hidden_size"] % c["num_attention_heads"]:
        raise RefError(f"{where}: hidden_size={c['hidden_size']} not divisible by "
                       f"num_attention_heads={c['num_attention_heads']}")
    c["num_patches"] = (c["image_size"] // c["patch_size"]) ** 2
    _check_act(c["hidden_act"], f"{where}: hidden_act")
    return c


def resolve_clip_text_config(raw, where):
    c = _with_defaults(raw, CLIP_TEXT_DEFAULTS, where)
    c["model_type"] = "clip_text_model"
    if c["hidden_size"] % c["num_attention_heads"]:
        raise RefError(f"{where}: hidden_size not divisible by num_attention_heads")
    _check_act(c["hidden_act"], f"{where}: hidden_act")
    return c


def resolve_config(raw, where="config.json"):
    """config.json dict -> resolved dict with every HF default applied and 'kind' set."""
    if not isinstance(raw, dict):
        raise RefError(f"{where}: expected a JSON object")
    mt = raw.get("model_type")
    if mt in TEXT_DEFAULTS:
        c = resolve_text_config(raw, where)
        c["kind"] = "decoder"
        return c
    if mt == "clip_vision_model":
        c = resolve_vision_config(raw, where)
        c["kind"] = "clip_vision"
        return c
    if mt == "clip":
        c = _with_defaults(raw, CLIP_DEFAULTS, where)
        text = dict(raw.get("text_config") or {})
        text.update(raw.get("text_config_dict") or {})  # CLIPConfig BC: *_config_dict wins
        vision = dict(raw.get("vision_config") or {})
        vision.update(raw.get("vision_config_dict") or {})
        c.pop("text_config_dict", None)
        c.pop("vision_config_dict", None)
        c["text_config"] = resolve_clip_text_config(text, where + ": text_config")
        c["vision_config"] = resolve_vision_config(vision, where + ": vision_config")
        c["kind"] = "clip"
        return c
    if mt in ("llava", "llava_next"):
        c = _with_defaults(raw, LLAVA_DEFAULTS if mt == "llava" else LLAVA_NEXT_DEFAULTS, where)
        # attribute_map {"image_token_id": "image_token_index"}: a saved image_token_id wins
        if "image_token_id" in raw:
            c["image_token_index"] = raw["image_token_id"]
        c.pop("image_token_id", None)
        if c["vision_feature_select_strategy"] not in ("default", "full"):
            raise RefError(f"{where}: vision_feature_select_strategy must be 'default' or 'full', "
                           f"got {c['vision_feature_select_strategy']!r}")
        vfl = c["vision_feature_layer"]
        if not (isinstance(vfl, int) or (isinstance(vfl, list) and vfl
                                         and all(isinstance(v, int) for v in vfl))):
            raise RefError(f"{where}: vision_feature_layer must be an int or a non-empty list of ints, "
                           f"got {vfl!r}")
        _check_act(c["projector_hidden_act"], f"{where}: projector_hidden_act")
        if raw.get("vision_config") is None:
            c["vision_config"] = resolve_vision_config(LLAVA_VISION_WHEN_MISSING, where + ": vision_config")
        else:
            c["vision_config"] = resolve_vision_config(raw["vision_config"], where + ": vision_config")
        c["text_config"] = resolve_text_config(raw.get("text_config") or {}, where + ": text_config")
        # LlavaConfig: "if not tie_word_embeddings and text_config.tie_word_embeddings: take it"
        c["tie_word_embeddings"] = bool(c["tie_word_embeddings"] or c["text_config"]["tie_word_embeddings"])
        c["text_config"]["tie_word_embeddings"] = c["tie_word_embeddings"]
        nl = c["vision_config"]["num_hidden_layers"]
        for layer in (vfl if isinstance(vfl, list) else [vfl]):
            if not -(nl + 1) <= layer <= nl:
                raise RefError(f"{where}: vision_feature_layer {layer} out of range for "
                               f"{nl + 1} hidden states")
        c["kind"] = mt
        if mt == "llava_next":
            pins = c["image_grid_pinpoints"]
            if not (isinstance(pins, list) and pins and all(isinstance(p, list) and len(p) == 2 for p in pins)):
                raise RefError(f"{where}: image_grid_pinpoints must be a list of [height, width] pairs")
        return c
    if mt == "qwen2_vl":
        # Qwen2VLConfig: text fields at the top level (and, from 4.52, in text_config which wins);
        # rope_scaling {"type": "mrope"} is rewritten to "default" with its mrope_section kept
        text = {k: v for k, v in raw.items() if k not in ("vision_config", "text_config")}
        text.update(raw.get("text_config") or {})
        rs = dict(text.get("rope_scaling") or {})
        kind = rs.get("rope_type", rs.get("type", "default"))
        if kind not in ("mrope", "default") or "mrope_section" not in rs:
            raise RefError(f"{where}: Qwen2-VL needs rope_scaling type mrope/default with mrope_section")
        text["rope_scaling"] = None
        text["model_type"] = "qwen2"
        tc = resolve_text_config(text, where, QWEN2VL_TEXT_DEFAULTS)
        tc["mrope_section"] = list(rs["mrope_section"])
        if sum(tc["mrope_section"]) * 2 != tc["head_dim"]:
            raise RefError(f"{where}: mrope_section {tc['mrope_section']} does not sum to head_dim / 2")
        vraw = dict(raw.get("vision_config") or {})
        if "in_chans" in vraw and "in_channels" not in vraw:
            vraw["in_channels"] = vraw["in_chans"]
        vc = _with_defaults(vraw, QWEN2VL_VISION_DEFAULTS, where + ": vision_config")
        c = {"model_type": "qwen2_vl", "kind": "qwen2_vl", "text_config": tc, "vision_config": vc}
        for k, v in QWEN2VL_TOKEN_DEFAULTS.items():
            c[k] = (raw.get("text_config") or {}).get(k, raw.get(k, v))
        c["tie_word_embeddings"] = tc["tie_word_embeddings"]
        return c
    if mt == "phi3_v":
        import phi3v_ref
        return phi3v_ref.resolve(raw, where)
    raise RefError(f"{where}: model_type {mt!r} not supported; expected one of "
                   f"llama, mistral, qwen2, clip_vision_model, clip, llava, llava_next, qwen2_vl, phi3_v")


def load_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise RefError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise RefError(f"{path}: invalid JSON ({e})") from None
    return resolve_config(raw, path)


# ---------------------------------------------------------------------------------------------
# ---- weights: HF key schema and the two LLaVA layouts ----
# ---------------------------------------------------------------------------------------------
# Each spec is (key, shape, init) in HF module-registration order; init is one of
# linear, bias, embed, norm_w, norm_b, class_emb, pos_emb, conv, scalar (used by tiny_models.py).

def decoder_specs(c, prefix="model.", head="lm_head.weight"):
    D, V, I = c["hidden_size"], c["vocab_size"], c["intermediate_size"]
    Hd, Kd = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"]
    s = [(prefix + "embed_tokens.weight", [V, D], "embed")]
    for i in range(c["num_hidden_layers"]):
        p = f"{prefix}layers.{i}."
        for name, out_f, in_f, bias in (("q_proj", Hd, D, c["qkv_bias"]), ("k_proj", Kd, D, c["qkv_bias"]),
                                        ("v_proj", Kd, D, c["qkv_bias"]), ("o_proj", D, Hd, c["o_bias"])):
            s.append((p + f"self_attn.{name}.weight", [out_f, in_f], "linear"))
            if bias:
                s.append((p + f"self_attn.{name}.bias", [out_f], "bias"))
        for name, out_f, in_f in (("gate_proj", I, D), ("up_proj", I, D), ("down_proj", D, I)):
            s.append((p + f"mlp.{name}.weight", [out_f, in_f], "linear"))
            if c["mlp_bias"]:
                s.append((p + f"mlp.{name}.bias", [out_f], "bias"))
        s.append((p + "input_layernorm.weight", [D], "norm_w"))
        s.append((p + "post_attention_layernorm.weight", [D], "norm_w"))
    s.append((prefix + "norm.weight", [D], "norm_w"))
    if not c["tie_word_embeddings"]:
        s.append((head, [V, D], "linear"))
    return s


def _clip_encoder_specs(c, prefix):
    D, I = c["hidden_size"], c["intermediate_size"]
    s = []
    for i in range(c["num_hidden_layers"]):
        p = f"{prefix}encoder.layers.{i}."
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
            s += [(p + f"self_attn.{name}.weight", [D, D], "linear"), (p + f"self_attn.{name}.bias", [D], "bias")]
        s += [(p + "layer_norm1.weight", [D], "norm_w"), (p + "layer_norm1.bias", [D], "norm_b"),
              (p + "mlp.fc1.weight", [I, D], "linear"), (p + "mlp.fc1.bias", [I], "bias"),
              (p + "mlp.fc2.weight", [D, I], "linear"), (p + "mlp.fc2.bias", [D], "bias"),
              (p + "layer_norm2.weight", [D], "norm_w"), (p + "layer_norm2.bias", [D], "norm_b")]
    return s


def clip_vision_specs(c, prefix="vision_model."):
    D, C, p = c["hidden_size"], c["num_channels"], c["patch_size"]
    s = [(prefix + "embeddings.class_embedding", [D], "class_emb"),
         (prefix + "embeddings.patch_embedding.weight", [D, C, p, p], "conv"),
         (prefix + "embeddings.position_embedding.weight", [c["num_patches"] + 1, D], "pos_emb"),
         (prefix + "pre_layrnorm.weight", [D], "norm_w"), (prefix + "pre_layrnorm.bias", [D], "norm_b")]
    s += _clip_encoder_specs(c, prefix)
    s += [(prefix + "post_layernorm.weight", [D], "norm_w"), (prefix + "post_layernorm.bias", [D], "norm_b")]
    return s


def clip_text_specs(c, prefix="text_model."):
    D = c["hidden_size"]
    s = [(prefix + "embeddings.token_embedding.weight", [c["vocab_size"], D], "embed"),
         (prefix + "embeddings.position_embedding.weight", [c["max_position_embeddings"], D], "pos_emb")]
    s += _clip_encoder_specs(c, prefix)
    s += [(prefix + "final_layer_norm.weight", [D], "norm_w"), (prefix + "final_layer_norm.bias", [D], "norm_b")]
    return s


def llava_projector_in(c):
    vfl = c["vision_feature_layer"]
    return c["vision_config"]["hidden_size"] * (len(vfl) if isinstance(vfl, list) else 1)


def qwen2vl_vision_specs(vc, prefix="visual."):
    D, C, p, tp, m = vc["embed_dim"], vc["in_channels"], vc["patch_size"], vc["temporal_patch_size"], vc["spatial_merge_size"]
    I = int(D * vc["mlp_ratio"])
    s = [(prefix + "patch_embed.proj.weight", [D, C, tp, p, p], "conv3d")]
    for i in range(vc["depth"]):
        b = f"{prefix}blocks.{i}."
        s += [(b + "norm1.weight", [D], "norm_w"), (b + "norm1.bias", [D], "norm_b"),
              (b + "norm2.weight", [D], "norm_w"), (b + "norm2.bias", [D], "norm_b"),
              (b + "attn.qkv.weight", [3 * D, D], "linear"), (b + "attn.qkv.bias", [3 * D], "bias"),
              (b + "attn.proj.weight", [D, D], "linear"), (b + "attn.proj.bias", [D], "bias"),
              (b + "mlp.fc1.weight", [I, D], "linear"), (b + "mlp.fc1.bias", [I], "bias"),
              (b + "mlp.fc2.weight", [D, I], "linear"), (b + "mlp.fc2.bias", [D], "bias")]
    H = D * m * m
    s += [(prefix + "merger.ln_q.weight", [D], "norm_w"), (prefix + "merger.ln_q.bias", [D], "norm_b"),
          (prefix + "merger.mlp.0.weight", [H, H], "linear"), (prefix + "merger.mlp.0.bias", [H], "bias"),
          (prefix + "merger.mlp.2.weight", [vc["hidden_size"], H], "linear"),
          (prefix + "merger.mlp.2.bias", [vc["hidden_size"]], "bias")]
    return s


# Qwen2-VL: legacy (< 4.52: visual.*, model.*) -> new (model.visual.*, model.language_model.*)
def qwen2vl_key_to_layout(key, layout):
    if layout == "legacy" or key.startswith("lm_head."):
        return key
    if key.startswith("visual."):
        return "model." + key
    return "model.language_model." + key[len("model."):]


def qwen2vl_canonicalize(weights):
    if not any(k.startswith("model.language_model.") or k.startswith("model.visual.") for k in weights):
        return weights, "legacy"
    out = {}
    for k, v in weights.items():
        if k.startswith("model.visual."):
            k = k[len("model."):]
        elif k.startswith("model.language_model."):
            k = "model." + k[len("model.language_model."):]
        out[k] = v
    return out, "new"


def param_specs(c):
    if c["kind"] == "phi3_v":
        import phi3v_ref
        return phi3v_ref.specs(c)
    """All checkpoint keys of the model, canonical names (LLaVA, Qwen2-VL: the legacy layout)."""
    if c["kind"] == "qwen2_vl":
        return qwen2vl_vision_specs(c["vision_config"]) + decoder_specs(c["text_config"])
    if c["kind"] == "decoder":
        return decoder_specs(c)
    if c["kind"] == "clip_vision":
        return clip_vision_specs(c)
    if c["kind"] == "clip":
        tc, vc, P = c["text_config"], c["vision_config"], c["projection_dim"]
        return (clip_text_specs(tc) + clip_vision_specs(vc)
                + [("visual_projection.weight", [P, vc["hidden_size"]], "linear"),
                   ("text_projection.weight", [P, tc["hidden_size"]], "linear"),
                   ("logit_scale", [], "scalar")])
    tc = c["text_config"]
    D = tc["hidden_size"]
    s = clip_vision_specs(c["vision_config"], "vision_tower.vision_model.")
    s += [("multi_modal_projector.linear_1.weight", [D, llava_projector_in(c)], "linear")]
    if c["multimodal_projector_bias"]:
        s += [("multi_modal_projector.linear_1.bias", [D], "bias")]
    s += [("multi_modal_projector.linear_2.weight", [D, D], "linear")]
    if c["multimodal_projector_bias"]:
        s += [("multi_modal_projector.linear_2.bias", [D], "bias")]
    if c["kind"] == "llava_next":  # LlavaNextModel: nn.Parameter after the projector
        s += [("image_newline", [D], "embed")]
    s += decoder_specs(tc, "language_model.model.", "language_model.lm_head.weight")
    return s


# legacy (< 4.52, LlavaForConditionalGeneration owning the CausalLM) -> new (LlavaModel inside)
LLAVA_LEGACY_TO_NEW = (("language_model.model.", "model.language_model."),
                       ("language_model.lm_head.", "lm_head."),
                       ("vision_tower.", "model.vision_tower."),
                       ("multi_modal_projector.", "model.multi_modal_projector."),
                       ("image_newline", "model.image_newline"))


def llava_key_to_layout(key, layout):
    if layout == "legacy":
        return key
    for old, new in LLAVA_LEGACY_TO_NEW:
        if key.startswith(old):
            return new + key[len(old):]
    raise ValueError(f"no new-layout name for LLaVA key '{key}'")


def llava_detect_and_canonicalize(weights, where):
    """Renames new-layout LLaVA keys to the legacy ones; rejects files mixing both layouts."""
    new_prefixes = tuple(new for _, new in LLAVA_LEGACY_TO_NEW)
    old_prefixes = tuple(old for old, _ in LLAVA_LEGACY_TO_NEW)
    has_new = any(k.startswith(new_prefixes) for k in weights)
    has_old = any(k.startswith(old_prefixes) and not k.startswith(new_prefixes) for k in weights)
    if has_new and has_old:
        raise RefError(f"{where}: mixes legacy (language_model.model.*) and new (model.language_model.*) "
                       f"LLaVA key layouts")
    if not has_new:
        return weights, "legacy"
    out = {}
    for k, v in weights.items():
        for old, new in LLAVA_LEGACY_TO_NEW:
            if k.startswith(new):
                k = old + k[len(new):]
                break
        out[k] = v
    return out, "new"


def _ignorable(key):
    # non-persistent buffers that older exports still carry (HF ignores them on load)
    return key.endswith("embeddings.position_ids") or key.endswith("rotary_emb.inv_freq")


def load_weights(model_dir, c, dtype):
    """Loads and checks the checkpoint against param_specs (names + shapes); casts to dtype."""
    try:
        weights = st.load_checkpoint_torch(model_dir)
    except (OSError, ValueError) as e:
        raise RefError(str(e)) from None
    layout = None
    if c["kind"] in ("llava", "llava_next"):
        weights, layout = llava_detect_and_canonicalize(weights, model_dir)
    if c["kind"] == "qwen2_vl":
        weights, layout = qwen2vl_canonicalize(weights)
    specs = param_specs(c)
    want = {k: shape for k, shape, _ in specs}
    tied = c.get("tie_word_embeddings") or c.get("text_config", {}).get("tie_word_embeddings")
    show = (lambda k: llava_key_to_layout(k, layout)) if layout else (lambda k: k)
    if c["kind"] == "qwen2_vl":
        show = lambda k: qwen2vl_key_to_layout(k, layout)  # noqa: E731
    for k, shape in want.items():
        if k not in weights:
            near = sorted(weights, key=lambda w: -_common_prefix(w, k))[:3]
            raise RefError(f"{model_dir}: missing tensor '{show(k)}' (expected shape {shape}); "
                           f"nearest present: {[show(n) for n in near]}")
        if list(weights[k].shape) != shape:
            raise RefError(f"{model_dir}: tensor '{show(k)}' has shape {list(weights[k].shape)}; "
                           f"expected {shape} from config.json")
    for k in weights:
        if k in want or _ignorable(k):
            continue
        if tied and k.endswith("lm_head.weight"):
            continue  # a tied head saved anyway is overwritten by tie_weights()
        raise RefError(f"{model_dir}: unexpected tensor '{show(k)}' for this config")
    return {k: weights[k].to(dtype) for k in want}, layout


def _common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# ---- layers ----
# ---------------------------------------------------------------------------------------------

def _check_act(name, where):
    if name not in ACT2FN:
        raise RefError(f"{where} '{name}' not supported; expected one of {sorted(ACT2FN)}")


ACT2FN = {  # transformers/activations.py
    "gelu": lambda x: F.gelu(x),                                   # GELUActivation (erf)
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),          # QuickGELUActivation
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),  # PytorchGELUTanh
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
}


def upcast_dtype(dtype):
    """HF upcasts norms/softmax to float32; the float64 'exact' mode keeps float64 throughout."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def rms_norm(x, w, eps):
    """LlamaRMSNorm: float32 statistics, then weight * hidden.to(input_dtype)."""
    input_dtype = x.dtype
    h = x.to(upcast_dtype(input_dtype))
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return w * h.to(input_dtype)


def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def linear(x, W, prefix):
    return F.linear(x, W[prefix + ".weight"], W.get(prefix + ".bias"))


def rope_inv_freq(rp, head_dim):
    """modeling_rope_utils: _compute_default/linear/llama3_parameters. float32; attention_factor 1."""
    base = rp["rope_theta"]
    dim = int(head_dim * rp.get("partial_rotary_factor", 1.0))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    kind = rp["rope_type"]
    if kind == "linear":
        inv_freq = inv_freq / rp["factor"]
    elif kind == "llama3":
        factor = rp["factor"]
        low_freq_factor = rp["low_freq_factor"]
        high_freq_factor = rp["high_freq_factor"]
        old_context_len = rp["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        # wavelen < high_freq_wavelen: keep; wavelen > low_freq_wavelen: divide by factor
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        # otherwise interpolate between the two with a smooth factor
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)
    return inv_freq, 1.0


def rope_cos_sin(inv_freq, attention_scaling, position_ids, dtype):
    """LlamaRotaryEmbedding.forward: freqs in float32 (autocast off), then cast to x.dtype.
    position_ids: [T] -> cos, sin: [T, d]"""
    work = upcast_dtype(dtype)
    freqs = torch.outer(position_ids.to(work), inv_freq.to(work))  # [T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)                        # [T, d]
    return (emb.cos() * attention_scaling).to(dtype), (emb.sin() * attention_scaling).to(dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x: [B, heads, T, d]; cos/sin: [T, d] (HF unsqueezes to broadcast over heads)."""
    return (x * cos) + (rotate_half(x) * sin)


def repeat_kv(x, n_rep):
    """[B, Hkv, T, d] -> [B, Hkv*n_rep, T, d]; head h uses kv head h // n_rep."""
    B, Hkv, T, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(B, Hkv, n_rep, T, d).reshape(B, Hkv * n_rep, T, d)


def additive_mask(T, dtype, causal=True, sliding_window=None):
    """[1, 1, T, T]: 0 where kv may be attended, finfo(dtype).min elsewhere (masking_utils.py:
    causal kv_idx <= q_idx; sliding window overlay kv_idx > q_idx - sliding_window)."""
    q = torch.arange(T)[:, None]
    kv = torch.arange(T)[None, :]
    allowed = torch.ones(T, T, dtype=torch.bool)
    if causal:
        allowed &= kv <= q
    if sliding_window is not None:
        allowed &= kv > q - sliding_window
    m = torch.zeros(T, T, dtype=dtype)
    m.masked_fill_(~allowed, torch.finfo(dtype).min)
    return m[None, None]


def eager_attention(q, k, v, mask, scaling):
    """eager_attention_forward: q [B,H,T,d], k/v [B,H,T,d] -> [B,T,H,d]."""
    attn = torch.matmul(q, k.transpose(2, 3)) * scaling
    if mask is not None:
        attn = attn + mask
    attn = F.softmax(attn, dim=-1, dtype=upcast_dtype(q.dtype)).to(q.dtype)
    out = torch.matmul(attn, v)
    return out.transpose(1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# ---- decoder (LlamaModel / MistralModel / Qwen2Model) ----
# ---------------------------------------------------------------------------------------------

def decoder_attention(c, W, p, x, cos, sin, mask):
    """x: [1, T, D] -> [1, T, D]"""
    B, T, _ = x.shape
    H, Hkv, d = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    q = linear(x, W, p + "q_proj").view(B, T, H, d).transpose(1, 2)      # [B, H, T, d]
    k = linear(x, W, p + "k_proj").view(B, T, Hkv, d).transpose(1, 2)    # [B, Hkv, T, d]
    v = linear(x, W, p + "v_proj").view(B, T, Hkv, d).transpose(1, 2)    # [B, Hkv, T, d]
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = repeat_kv(k, H // Hkv), repeat_kv(v, H // Hkv)
    out = eager_attention(q, k, v, mask, d ** -0.5)                      # [B, T, H, d]
    return linear(out.reshape(B, T, H * d), W, p + "o_proj")


def decoder_mlp(c, W, p, x):
    act = ACT2FN[c["hidden_act"]]
    return linear(act(linear(x, W, p + "gate_proj")) * linear(x, W, p + "up_proj"), W, p + "down_proj")


def decoder_forward(c, W, prefix, inputs_embeds, position_ids3=None):
    """inputs_embeds: [1, T, D] -> HF hidden_states tuple as a list of L+1 tensors [1, T, D]:
    entry l < L is the input of layer l (0 = embeddings), entry L is after the final norm.
    position_ids3 [3, T]: M-RoPE positions (Qwen2-VL)."""
    T = inputs_embeds.shape[1]
    dtype = inputs_embeds.dtype
    inv_freq, scaling = rope_inv_freq(c["rope"], c["head_dim"])
    if position_ids3 is None:
        cos, sin = rope_cos_sin(inv_freq, scaling, torch.arange(T), dtype)
    else:
        cos, sin = mrope_cos_sin(inv_freq, position_ids3, c["mrope_section"], dtype)
    masks = {"full_attention": additive_mask(T, dtype),
             "sliding_attention": additive_mask(T, dtype, sliding_window=c.get("sliding_window"))
             if "sliding_attention" in c["layer_types"] else None}
    h = inputs_embeds
    hidden_states = []
    for i in range(c["num_hidden_layers"]):
        hidden_states.append(h)
        p = f"{prefix}layers.{i}."
        residual = h
        h = rms_norm(h, W[p + "input_layernorm.weight"], c["rms_norm_eps"])
        h = decoder_attention(c, W, p + "self_attn.", h, cos, sin, masks[c["layer_types"][i]])
        h = residual + h
        residual = h
        h = rms_norm(h, W[p + "post_attention_layernorm.weight"], c["rms_norm_eps"])
        h = decoder_mlp(c, W, p + "mlp.", h)
        h = residual + h
    h = rms_norm(h, W[prefix + "norm.weight"], c["rms_norm_eps"])
    hidden_states.append(h)
    return hidden_states


def embed_tokens(c, W, prefix, ids, where):
    V = c["vocab_size"]
    bad = [t for t in ids if not 0 <= t < V]
    if bad:
        raise RefError(f"{where}: token id {bad[0]} outside vocab_size {V}")
    return F.embedding(torch.tensor([ids], dtype=torch.int64), W[prefix + "embed_tokens.weight"])


# ---------------------------------------------------------------------------------------------
# ---- CLIP (CLIPVisionTransformer / CLIPTextTransformer) ----
# ---------------------------------------------------------------------------------------------

def clip_encoder(c, W, prefix, x, mask):
    """CLIPEncoder: x [N, S, D] -> hidden_states list of L+1 (entry 0 = encoder input)."""
    N, S, D = x.shape
    H = c["num_attention_heads"]
    d = D // H
    act = ACT2FN[c["hidden_act"]]
    eps = c["layer_norm_eps"]
    hidden_states = [x]
    for i in range(c["num_hidden_layers"]):
        p = f"{prefix}encoder.layers.{i}."
        residual = x
        h = layer_norm(x, W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"], eps)
        q = linear(h, W, p + "self_attn.q_proj").view(N, S, H, d).transpose(1, 2)  # [N, H, S, d]
        k = linear(h, W, p + "self_attn.k_proj").view(N, S, H, d).transpose(1, 2)
        v = linear(h, W, p + "self_attn.v_proj").view(N, S, H, d).transpose(1, 2)
        h = eager_attention(q, k, v, mask, d ** -0.5).reshape(N, S, D)
        h = linear(h, W, p + "self_attn.out_proj")
        x = residual + h
        residual = x
        h = layer_norm(x, W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"], eps)
        h = linear(act(linear(h, W, p + "mlp.fc1")), W, p + "mlp.fc2")
        x = residual + h
        hidden_states.append(x)
    return hidden_states


def clip_vision_forward(c, W, prefix, pixel_values):
    """pixel_values [N, C, S, S] -> (hidden_states list [N, P+1, Dv], pooled [N, Dv])."""
    N, C, Hi, Wi = pixel_values.shape
    w = W[prefix + "embeddings.patch_embedding.weight"]
    patch = F.conv2d(pixel_values.to(w.dtype), w, stride=c["patch_size"])   # [N, Dv, g, g]
    patch = patch.flatten(2).transpose(1, 2)                                   # [N, P, Dv]
    cls = W[prefix + "embeddings.class_embedding"].expand(N, 1, -1)           # [N, 1, Dv]
    x = torch.cat([cls, patch], dim=1) + W[prefix + "embeddings.position_embedding.weight"][None]
    x = layer_norm(x, W[prefix + "pre_layrnorm.weight"], W[prefix + "pre_layrnorm.bias"], c["layer_norm_eps"])
    hidden_states = clip_encoder(c, W, prefix, x, None)
    pooled = layer_norm(hidden_states[-1][:, 0, :], W[prefix + "post_layernorm.weight"],
                        W[prefix + "post_layernorm.bias"], c["layer_norm_eps"])
    return hidden_states, pooled


def clip_text_forward(c, W, prefix, ids, where):
    """ids [T] -> (hidden_states list [1, T, Dt] (no final norm), last_hidden [1, T, Dt], pooled [1, Dt])."""
    T = len(ids)
    if T > c["max_position_embeddings"]:
        raise RefError(f"{where}: {T} tokens exceed text max_position_embeddings {c['max_position_embeddings']}")
    bad = [t for t in ids if not 0 <= t < c["vocab_size"]]
    if bad:
        raise RefError(f"{where}: token id {bad[0]} outside text vocab_size {c['vocab_size']}")
    t = torch.tensor([ids], dtype=torch.int64)
    x = (F.embedding(t, W[prefix + "embeddings.token_embedding.weight"])
         + W[prefix + "embeddings.position_embedding.weight"][:T][None])
    hidden_states = clip_encoder(c, W, prefix, x, additive_mask(T, x.dtype))
    last = layer_norm(hidden_states[-1], W[prefix + "final_layer_norm.weight"],
                      W[prefix + "final_layer_norm.bias"], c["layer_norm_eps"])
    if c["eos_token_id"] == 2:  # legacy configs: eot is the highest id in the sequence
        idx = int(t[0].argmax())
    else:                       # first occurrence of eos_token_id (0 when absent, as argmax does)
        idx = int((t[0] == c["eos_token_id"]).int().argmax())
    return hidden_states, last, last[:, idx, :]


# ---------------------------------------------------------------------------------------------
# ---- LLaVA ----
# ---------------------------------------------------------------------------------------------

def llava_image_features(c, W, pixel_values):
    """pixel_values [N, C, S, S] -> (vision hidden_states, selected [N, F, Dv*k], projected [N, F, D])."""
    hidden_states, _ = clip_vision_forward(c["vision_config"], W, "vision_tower.vision_model.", pixel_values)
    vfl = c["vision_feature_layer"]
    layers = vfl if isinstance(vfl, list) else [vfl]
    pool = [hidden_states[layer] for layer in layers]
    if c["vision_feature_select_strategy"] == "default":
        pool = [h[:, 1:] for h in pool]  # drop CLS
    selected = torch.cat(pool, dim=-1)
    act = ACT2FN[c["projector_hidden_act"]]
    h = linear(selected, W, "multi_modal_projector.linear_1")
    h = linear(act(h), W, "multi_modal_projector.linear_2")
    return hidden_states, selected, h


# ---- LLaVA-NeXT (modeling_llava_next.py, image_processing_utils.select_best_resolution) ----

def select_best_resolution(original_size, possible_resolutions):
    original_height, original_width = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for height, width in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
                effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (height, width)
    return best_fit


def get_anyres_image_grid_shape(image_size, grid_pinpoints, patch_size):
    height, width = select_best_resolution(image_size, grid_pinpoints)
    return height // patch_size, width // patch_size


def image_size_to_num_patches(image_size, grid_pinpoints, patch_size):
    height, width = select_best_resolution(image_size, grid_pinpoints)
    num_patches = 0
    for i in range(0, height, patch_size):
        for j in range(0, width, patch_size):
            num_patches += 1
    return num_patches + 1  # base patch


def unpad_image(tensor, original_size):
    """tensor [C, H, W] -> the centre window with the original aspect ratio."""
    original_height, original_width = original_size
    current_height, current_width = tensor.shape[1:]
    original_aspect_ratio = original_width / original_height
    current_aspect_ratio = current_width / current_height
    if original_aspect_ratio > current_aspect_ratio:
        scale_factor = current_width / original_width
        new_height = int(round(original_height * scale_factor, 7))
        padding = (current_height - new_height) // 2
        return tensor[:, padding: current_height - padding, :]
    scale_factor = current_height / original_height
    new_width = int(round(original_width * scale_factor, 7))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding: current_width - padding]


def llava_next_image_features(c, W, pixel_values, image_sizes):
    """pixel_values [sum crops, C, S, S]; image_sizes [[h, w], ...] -> list of [F_i, D] per image
    (get_image_features + pack_image_features with image_newline)."""
    vc = c["vision_config"]
    pins = c["image_grid_pinpoints"]
    image_num_patches = [image_size_to_num_patches(s, pins, vc["image_size"]) for s in image_sizes]
    if sum(image_num_patches) != pixel_values.shape[0]:
        raise RefError(f"pixel_values holds {pixel_values.shape[0]} crops; image_sizes need "
                       f"{image_num_patches}")
    _, _, projected = llava_image_features(c, W, pixel_values)          # [crops, g*g, D]
    image_features = torch.split(projected, image_num_patches, dim=0)
    image_newline = W["image_newline"]
    out = []
    for image_idx, image_feature in enumerate(image_features):
        if image_feature.shape[0] > 1:
            base_image_feature = image_feature[0]
            image_feature = image_feature[1:]
            height = width = vc["image_size"] // vc["patch_size"]
            num_patch_height, num_patch_width = get_anyres_image_grid_shape(
                image_sizes[image_idx], pins, vc["image_size"])
            image_feature = image_feature.view(num_patch_height, num_patch_width, height, width, -1)
            image_feature = image_feature.permute(4, 0, 2, 1, 3).contiguous()
            image_feature = image_feature.flatten(1, 2).flatten(2, 3)
            image_feature = unpad_image(image_feature, image_sizes[image_idx])
            image_feature = torch.cat(
                (image_feature,
                 image_newline[:, None, None].expand(*image_feature.shape[:-1], 1).to(image_feature.dtype)),
                dim=-1)
            image_feature = image_feature.flatten(1, 2).transpose(0, 1)
            image_feature = torch.cat((base_image_feature, image_feature), dim=0)
        else:
            image_feature = image_feature[0]
            image_feature = torch.cat((image_feature, image_newline[None].to(image_feature)), dim=0)
        out.append(image_feature)
    return out


def llava_merge_list(c, ids, embeds, feats, where):
    """As llava_merge with a feature count per image: feats list of [F_i, D]."""
    tok = c["image_token_index"]
    positions = [j for j, t in enumerate(ids) if t == tok]
    total = sum(f.shape[0] for f in feats)
    if len(positions) == total:
        out = embeds.clone()
        out[0, positions] = torch.cat(feats, 0).to(embeds.dtype)
        return out, list(ids)
    if len(positions) == len(feats):
        pieces, new_ids, last = [], [], 0
        for n, j in enumerate(positions):
            pieces += [embeds[0, last:j], feats[n].to(embeds.dtype)]
            new_ids += list(ids[last:j]) + [tok] * feats[n].shape[0]
            last = j + 1
        pieces.append(embeds[0, last:])
        new_ids += list(ids[last:])
        return torch.cat(pieces, dim=0)[None], new_ids
    raise RefError(f"{where}: {len(positions)} image tokens (id {tok}) in input_ids; expected "
                   f"{total} or {len(feats)} (one per image)")


def llava_merge(c, ids, embeds, image_features, where):
    """ids [T]; embeds [1, T, D]; image_features [N, F, D] -> (merged [1, T', D], expanded ids [T'])."""
    tok = c["image_token_index"]
    N, Fn, D = image_features.shape
    positions = [j for j, t in enumerate(ids) if t == tok]
    feats = image_features.to(embeds.dtype)
    if len(positions) == N * Fn:   # processor already expanded <image> to F tokens: masked_scatter
        out = embeds.clone()
        out[0, positions] = feats.reshape(N * Fn, D)
        return out, list(ids)
    if len(positions) == N:        # one token per image (pre-4.44 _merge_input_ids_with_image_features)
        pieces, new_ids, last = [], [], 0
        for n, j in enumerate(positions):
            pieces += [embeds[0, last:j], feats[n]]
            new_ids += list(ids[last:j]) + [tok] * Fn
            last = j + 1
        pieces.append(embeds[0, last:])
        new_ids += list(ids[last:])
        return torch.cat(pieces, dim=0)[None], new_ids
    raise RefError(f"{where}: {len(positions)} image tokens (id {tok}) in input_ids; expected "
                   f"{N * Fn} (= {N} images x {Fn} features) or {N} (one per image)")


# ---------------------------------------------------------------------------------------------
# ---- Qwen2-VL (modeling_qwen2_vl.py: Qwen2VisionTransformerPretrainedModel, get_rope_index,
# ---- Qwen2VLRotaryEmbedding + apply_multimodal_rotary_pos_emb) ----
# ---------------------------------------------------------------------------------------------

def qwen2vl_vision_forward(vc, W, prefix, pixel_values, grid_thw):
    """pixel_values [L, C*tp*p*p]; grid_thw [[t, h, w], ...] -> merged features [L / m^2, D]."""
    D, H = vc["embed_dim"], vc["num_heads"]
    m, tp, p, C = vc["spatial_merge_size"], vc["temporal_patch_size"], vc["patch_size"], vc["in_channels"]
    w = W[prefix + "patch_embed.proj.weight"]
    x = F.conv3d(pixel_values.view(-1, C, tp, p, p).to(w.dtype), w, stride=(tp, p, p)).view(-1, D)
    # rot_pos_emb
    pos_ids = []
    for t, h, wd in grid_thw:
        hpos = torch.arange(h).unsqueeze(1).expand(-1, wd)
        hpos = hpos.reshape(h // m, m, wd // m, m).permute(0, 2, 1, 3).flatten()
        wpos = torch.arange(wd).unsqueeze(0).expand(h, -1)
        wpos = wpos.reshape(h // m, m, wd // m, m).permute(0, 2, 1, 3).flatten()
        pos_ids.append(torch.stack([hpos, wpos], dim=-1).repeat(t, 1))
    pos_ids = torch.cat(pos_ids, dim=0)
    max_grid_size = max(max(h, wd) for _, h, wd in grid_thw)
    dim = (D // H) // 2
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    seq = torch.arange(max_grid_size, dtype=inv_freq.dtype)
    rotary_pos_emb_full = torch.outer(seq, inv_freq)
    rotary_pos_emb = rotary_pos_emb_full[pos_ids].flatten(1)
    emb = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    lens = [h * wd for t, h, wd in grid_thw for _ in range(t)]
    cu = [0]
    for n in lens:
        cu.append(cu[-1] + n)
    L = x.shape[0]
    mask = torch.full((1, L, L), torch.finfo(x.dtype).min, dtype=x.dtype)
    for i in range(1, len(cu)):
        mask[..., cu[i - 1]:cu[i], cu[i - 1]:cu[i]] = 0
    act = ACT2FN[vc["hidden_act"]]
    d = D // H
    for i in range(vc["depth"]):
        bp = f"{prefix}blocks.{i}."
        h = layer_norm(x, W[bp + "norm1.weight"], W[bp + "norm1.bias"], 1e-6)
        q, k, v = linear(h, W, bp + "attn.qkv").reshape(L, 3, H, -1).permute(1, 0, 2, 3).unbind(0)
        # apply_rotary_pos_emb_vision: float32, cast back
        c, s = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
        q = ((q.float() * c) + (rotate_half(q.float()) * s)).to(x.dtype)
        k = ((k.float() * c) + (rotate_half(k.float()) * s)).to(x.dtype)
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        attn = torch.matmul(q, k.transpose(1, 2)) / math.sqrt(d) + mask
        attn = F.softmax(attn, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(attn, v).transpose(0, 1).reshape(L, -1)
        x = x + linear(o, W, bp + "attn.proj")
        h = layer_norm(x, W[bp + "norm2.weight"], W[bp + "norm2.bias"], 1e-6)
        x = x + linear(act(linear(h, W, bp + "mlp.fc1")), W, bp + "mlp.fc2")
    h = layer_norm(x, W[prefix + "merger.ln_q.weight"], W[prefix + "merger.ln_q.bias"], 1e-6)
    h = h.view(-1, D * m * m)
    return linear(F.gelu(linear(h, W, prefix + "merger.mlp.0")), W, prefix + "merger.mlp.2")


def qwen2vl_rope_index(c, input_ids, image_grid_thw):
    """get_rope_index for one unpadded sequence with images only -> [3, T] int64."""
    m = c["vision_config"]["spatial_merge_size"]
    image_token_id, vision_start = c["image_token_id"], c["vision_start_token_id"]
    ids = torch.tensor(input_ids)
    if not image_grid_thw:
        return torch.arange(len(input_ids)).view(1, -1).expand(3, -1)
    vision_start_indices = torch.argwhere(ids == vision_start).squeeze(1)
    vision_tokens = ids[vision_start_indices + 1] if len(vision_start_indices) else ids[:0]
    image_nums = int((vision_tokens == image_token_id).sum())
    input_tokens = list(input_ids)
    llm_pos_ids_list = []
    st, image_index = 0, 0
    for _ in range(image_nums):
        ed = input_tokens.index(image_token_id, st)
        t, h, w = image_grid_thw[image_index]
        image_index += 1
        llm_grid_t, llm_grid_h, llm_grid_w = t, h // m, w // m
        text_len = ed - st
        st_idx = llm_pos_ids_list[-1].max() + 1 if len(llm_pos_ids_list) > 0 else 0
        llm_pos_ids_list.append(torch.arange(text_len).view(1, -1).expand(3, -1) + st_idx)
        t_index = torch.arange(llm_grid_t).view(-1, 1).expand(-1, llm_grid_h * llm_grid_w).flatten()
        h_index = torch.arange(llm_grid_h).view(1, -1, 1).expand(llm_grid_t, -1, llm_grid_w).flatten()
        w_index = torch.arange(llm_grid_w).view(1, 1, -1).expand(llm_grid_t, llm_grid_h, -1).flatten()
        llm_pos_ids_list.append(torch.stack([t_index, h_index, w_index]) + text_len + st_idx)
        st = ed + llm_grid_t * llm_grid_h * llm_grid_w
    if st < len(input_tokens):
        st_idx = llm_pos_ids_list[-1].max() + 1 if len(llm_pos_ids_list) > 0 else 0
        text_len = len(input_tokens) - st
        llm_pos_ids_list.append(torch.arange(text_len).view(1, -1).expand(3, -1) + st_idx)
    return torch.cat(llm_pos_ids_list, dim=1).reshape(3, -1)


def mrope_cos_sin(inv_freq, position_ids3, mrope_section, dtype):
    """Qwen2VLRotaryEmbedding + the section selection of apply_multimodal_rotary_pos_emb.
    position_ids3 [3, T] -> cos, sin [T, d]"""
    T = position_ids3.shape[1]
    inv_freq_expanded = inv_freq[None, None, :, None].float().expand(3, 1, -1, 1)
    position_ids_expanded = position_ids3[:, None, None, :].float()            # [3, 1, 1, T]
    freqs = (inv_freq_expanded @ position_ids_expanded).transpose(2, 3)        # [3, 1, T, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)                        # [3, 1, T, d]
    sec = list(mrope_section) * 2
    cos = torch.cat([m[i % 3] for i, m in enumerate(cos.split(sec, dim=-1))], dim=-1)
    sin = torch.cat([m[i % 3] for i, m in enumerate(sin.split(sec, dim=-1))], dim=-1)
    return cos[0], sin[0]                                                      # [T, d]


# ---------------------------------------------------------------------------------------------
# ---- driver ----
# ---------------------------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _f32(t):
    return t.detach().to(torch.float32).contiguous()


def _check_pixels(vc, px, where):
    if px.dim() != 4 or px.shape[1] != vc["num_channels"]:
        raise RefError(f"{where}: pixel_values must be [n_images, {vc['num_channels']}, H, W], "
                       f"got {list(px.shape)}")
    S = vc["image_size"]
    if px.shape[2] != S or px.shape[3] != S:
        raise RefError(f"{where}: image size {px.shape[2]}x{px.shape[3]} does not match vision "
                       f"image_size {S}x{S}")
    if px.shape[0] == 0:
        raise RefError(f"{where}: pixel_values holds zero images")


def run_one(c, W, item, i, dtype, out):
    """Runs input i (dict with optional input_ids list and pixel_values float tensor) into out."""
    where = f"input {i}"
    ids = item.get("input_ids")
    px = item.get("pixel_values")
    image_sizes = item.get("image_sizes")
    kind = c["kind"]
    if kind == "phi3_v":
        import phi3v_ref
        return phi3v_ref.run_one(c, W, item, i, dtype, out)
    if kind == "qwen2_vl":
        if ids is None:
            raise RefError(f"{where}: qwen2_vl models need input_ids")
        tc = c["text_config"]
        embeds = embed_tokens(tc, W, "model.", ids, where)
        grid = item.get("image_grid_thw") or []
        if px is not None:
            if not (isinstance(grid, list) and grid and all(isinstance(g, list) and len(g) == 3 for g in grid)):
                raise RefError(f"{where}: qwen2_vl pixel_values need image_grid_thw [[t, h, w], ...]")
            feats = qwen2vl_vision_forward(c["vision_config"], W, "visual.", px.to(dtype), grid)
            m2 = c["vision_config"]["spatial_merge_size"] ** 2
            per = [t * h * w // m2 for t, h, w in grid]
            embeds, ids = llava_merge_list({"image_token_index": c["image_token_id"]}, ids, embeds,
                                           list(torch.split(feats, per, 0)), where)
            out[f"image_features.{i}"] = _f32(feats)
            out[f"expanded_ids.{i}"] = torch.tensor(ids, dtype=torch.int64)
        pos3 = qwen2vl_rope_index(c, ids, grid)
        out[f"position_ids.{i}"] = pos3.to(torch.float32)
        hs = decoder_forward(tc, W, "model.", embeds, pos3)
        out[f"hidden.{i}"] = _f32(hs[-1][0])
        out[f"emb.{i}"] = F.normalize(_f32(hs[-1][0, -1]), p=2.0, dim=-1)
        return
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                                  for t in ids)):
        raise RefError(f"{where}: input_ids must be a list of integers")
    if ids is not None and len(ids) == 0:
        raise RefError(f"{where}: input_ids is empty")
    if px is not None:
        px = torch.as_tensor(px).to(torch.float32)
    if kind == "llava_next":
        if ids is None:
            raise RefError(f"{where}: llava_next models need input_ids")
        tc = c["text_config"]
        prefix = "language_model.model."
        embeds = embed_tokens(tc, W, prefix, ids, where)
        if px is not None:
            if not (isinstance(image_sizes, list) and all(isinstance(s, list) and len(s) == 2 for s in image_sizes)):
                raise RefError(f"{where}: llava_next pixel_values need image_sizes [[h, w], ...]")
            feats = llava_next_image_features(c, W, px.to(dtype), image_sizes)
            embeds, new_ids = llava_merge_list(c, ids, embeds, feats, where)
            out[f"image_features.{i}"] = _f32(torch.cat(feats, 0))
            out[f"expanded_ids.{i}"] = torch.tensor(new_ids, dtype=torch.int64)
        hs = decoder_forward(tc, W, prefix, embeds)
        out[f"hidden.{i}"] = _f32(hs[-1][0])
        out[f"emb.{i}"] = F.normalize(_f32(hs[-1][0, -1]), p=2.0, dim=-1)
        return
    if kind in ("decoder", "llava"):
        if ids is None:
            raise RefError(f"{where}: {kind} models need input_ids")
        tc = c if kind == "decoder" else c["text_config"]
        prefix = "model." if kind == "decoder" else "language_model.model."
        embeds = embed_tokens(tc, W, prefix, ids, where)
        if px is not None:
            if kind == "decoder":
                raise RefError(f"{where}: pixel_values given but {c['model_type']} is a text-only model")
            _check_pixels(c["vision_config"], px, where)
            vh, selected, feats = llava_image_features(c, W, px.to(dtype))
            embeds, new_ids = llava_merge(c, ids, embeds, feats, where)
            out[f"image_features.{i}"] = _f32(feats)
            out[f"vision_selected.{i}"] = _f32(selected)
            for l, h in enumerate(vh):
                out[f"clip_hidden.{i}.{l}"] = _f32(h)
            out[f"expanded_ids.{i}"] = torch.tensor(new_ids, dtype=torch.int64)
        hs = decoder_forward(tc, W, prefix, embeds)
        for l, h in enumerate(hs):
            out[f"layer.{i}.{l}"] = _f32(h[0])
        out[f"hidden.{i}"] = _f32(hs[-1][0])
        out[f"emb.{i}"] = F.normalize(_f32(hs[-1][0, -1]), p=2.0, dim=-1)
        return
    if ids is None and px is None:
        raise RefError(f"{where}: needs pixel_values (and/or input_ids for CLIPModel)")
    if px is not None:
        vc = c if kind == "clip_vision" else c["vision_config"]
        _check_pixels(vc, px, where)
        hs, pooled = clip_vision_forward(vc, W, "vision_model.", px.to(dtype))
        for l, h in enumerate(hs):
            out[f"clip_hidden.{i}.{l}"] = _f32(h)
        out[f"clip_last_hidden.{i}"] = _f32(hs[-1])
        out[f"clip_pooled.{i}"] = _f32(pooled)
        if kind == "clip":
            out[f"image_embeds.{i}"] = _f32(F.linear(pooled, W["visual_projection.weight"]))
    if ids is not None:
        if kind != "clip":
            raise RefError(f"{where}: input_ids given but clip_vision_model has no text tower")
        hs, last, pooled = clip_text_forward(c["text_config"], W, "text_model.", ids, where)
        for l, h in enumerate(hs):
            out[f"clip_text_hidden.{i}.{l}"] = _f32(h[0])
        out[f"clip_text_last_hidden.{i}"] = _f32(last[0])
        out[f"clip_text_pooled.{i}"] = _f32(pooled[0])
        out[f"text_embeds.{i}"] = _f32(F.linear(pooled, W["text_projection.weight"])[0])


def run(model_dir, inputs, dtype="float32"):
    """Python API: inputs = list of {"input_ids": [...], "pixel_values": array [N,3,S,S]}.
    Returns {name: float32 tensor (int64 for expanded_ids)}."""
    if dtype not in DTYPES:
        raise RefError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    c = load_config(model_dir)
    W, _ = load_weights(model_dir, c, DTYPES[dtype])
    out = {}
    with torch.no_grad():
        for i, item in enumerate(inputs):
            if not isinstance(item, dict):
                raise RefError(f"input {i}: expected an object with input_ids and/or pixel_values")
            run_one(c, W, item, i, DTYPES[dtype], out)
    return out


def read_inputs(path):
    """IN.json -> list of dicts with pixel_values loaded from the .npy files it names."""
    try:
        with open(path) as f:
            items = json.load(f)
    except OSError as e:
        raise RefError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise RefError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(items, list):
        raise RefError(f"{path}: expected a JSON list of inputs")
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not set(item) <= {"input_ids", "pixel_values", "image_sizes",
                                                           "image_grid_thw"}:
            raise RefError(f"{path}: input {i} must be an object with keys input_ids, pixel_values "
                           f"and (LLaVA-NeXT) image_sizes")
        item = dict(item)
        if "pixel_values" in item:
            if not isinstance(item["pixel_values"], str):
                raise RefError(f"{path}: input {i}: pixel_values must be a .npy file name")
            npy = os.path.join(base, item["pixel_values"])
            try:
                arr = st.load_npy(npy)
            except (OSError, ValueError) as e:
                raise RefError(f"{npy}: cannot load .npy ({e})") from None
            if arr.dtype not in (np.float32, np.float64):
                raise RefError(f"{npy}: pixel_values must be float32, got {arr.dtype}")
            item["pixel_values"] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        out.append(item)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model directory (config.json + safetensors)")
    ap.add_argument("--inputs", help="IN.json")
    ap.add_argument("--output", help="REF.safetensors to write")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = ap.parse_args(argv)
    try:
        if args.print_config:
            print(json.dumps(load_config(args.model), indent=2, sort_keys=True))
            return 0
        if not args.inputs or not args.output:
            raise RefError("--inputs and --output are required (or use --print-config)")
        out = run(args.model, read_inputs(args.inputs), args.dtype)
        c = load_config(args.model)
        st.save_torch(out, args.output, {"model_type": c.get("model_type", ""), "kind": c["kind"],
                                         "dtype": args.dtype, "generator": "tests/gen/reference.py"})
    except RefError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
