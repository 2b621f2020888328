#!/usr/bin/python3
"""tiny_models.py - writes tiny random-weight checkpoints in the real Hugging Face layout.

Usage:
  tiny_models.py --arch ARCH --seed N --out DIR [--layout legacy|new] [--dtype float32|bfloat16]
                 [--set key=value ...] [--unset key ...] [--shards K] [--with-position-ids]

ARCH: llama llama3 mistral qwen2 clip_vision clip llava llava_qwen2 llava_next qwen2_vl phi3_v
(see README.md).
Writes DIR/config.json (the fields HF's config class saves), DIR/model.safetensors with HF's key
names (or K shards + model.safetensors.index.json), and for image models
DIR/preprocessor_config.json (CLIPImageProcessor) matched to the vision image_size.

--set a.b=v  sets config key a.b (nested dicts by dots); v is parsed as JSON when it parses
             (1, 1e-5, true, null, [-3,-1], {"rope_type":"llama3",...}), else taken as a string.
--unset a.b  removes the key, so readers must apply HF's class default.
--layout     LLaVA key layout: legacy (< transformers 4.52: language_model.model.*, image_token_index)
             or new (model.language_model.*, lm_head.weight, image_token_id). Same seed -> same weights.

Weights are deterministic for a seed (torch.Generator, drawn in HF registration order). They are
NOT HF's N(0, 0.02) init: linear weights have std 1/sqrt(fan_in) and embeddings std 1, so attention
is peaked and RoPE, masks and GQA grouping change the outputs visibly; norm weights are 1 + N(0, 0.2)
and biases N(0, 0.2) (std), so a forgotten norm weight or bias shows.
"""
import argparse
import copy
import json
import math
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep tests/gen free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402
import st  # noqa: E402

TRANSFORMERS_VERSION = {"legacy": "4.46.0", "new": "4.52.0"}


# ---- base configs: the fields HF's save_pretrained writes for each class ----

def _llama():
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
        "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 160,
        "max_position_embeddings": 256, "mlp_bias": False, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False, "use_cache": True,
        "vocab_size": 384,
    }


def _llama3():
    c = _llama()
    c.update({
        "bos_token_id": 0, "eos_token_id": 1, "head_dim": 16, "hidden_size": 64, "intermediate_size": 128,
        "max_position_embeddings": 512, "num_attention_heads": 4, "num_hidden_layers": 3,
        "num_key_value_heads": 1, "rope_theta": 500000.0, "tie_word_embeddings": True, "vocab_size": 512,
        # original_max_position_embeddings scaled down so that, with head_dim 16, the high, medium
        # and low frequency bands of the llama3 rule are all populated
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 64, "rope_type": "llama3"},
    })
    return c


def _mistral():
    return {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 48, "initializer_range": 0.02, "intermediate_size": 112,
        "max_position_embeddings": 1024, "num_attention_heads": 4, "num_hidden_layers": 2,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "sliding_window": 8, "tie_word_embeddings": False, "use_cache": True, "vocab_size": 320,
    }


def _qwen2():
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "attention_dropout": 0.0, "bos_token_id": 300, "eos_token_id": 301, "hidden_act": "silu",
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
        "max_position_embeddings": 512, "max_window_layers": 1, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        # like real Qwen2 configs: a window is named but off (use_sliding_window false)
        "sliding_window": 6, "tie_word_embeddings": False, "use_cache": True,
        "use_sliding_window": False, "vocab_size": 400,
    }


def _clip_vision_fields(hidden, inter, layers, heads, image, patch, proj):
    return {"attention_dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": hidden,
            "image_size": image, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": inter, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model",
            "num_attention_heads": heads, "num_channels": 3, "num_hidden_layers": layers,
            "patch_size": patch, "projection_dim": proj}


def _clip_vision():
    c = _clip_vision_fields(48, 96, 3, 4, 32, 8, 32)
    c["architectures"] = ["CLIPVisionModel"]
    return c


def _clip():
    text = {"attention_dropout": 0.0, "bos_token_id": 318, "eos_token_id": 319, "hidden_act": "quick_gelu",
            "hidden_size": 32, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": 64, "layer_norm_eps": 1e-5, "max_position_embeddings": 24,
            "model_type": "clip_text_model", "num_attention_heads": 4, "num_hidden_layers": 2,
            "pad_token_id": 1, "projection_dim": 24, "vocab_size": 320}
    return {"architectures": ["CLIPModel"], "model_type": "clip", "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592, "projection_dim": 24, "text_config": text,
            "vision_config": _clip_vision_fields(48, 80, 2, 3, 48, 16, 24)}


def _llava():
    # Like llava-hf/llava-1.5-7b-hf: text_config and vision_config give only some keys and rely on
    # LlamaConfig / CLIPVisionConfig defaults (rope_theta, hidden_act, layer_norm_eps, ...).
    text = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_hidden_layers": 2, "num_key_value_heads": 4, "max_position_embeddings": 256,
            "rms_norm_eps": 1e-5, "vocab_size": 512}
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "image_size": 32,
              "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
              "patch_size": 8, "projection_dim": 24}
    return {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
            "ignore_index": -100, "image_token_index": 500, "projector_hidden_act": "gelu",
            "text_config": text, "vision_config": vision, "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default"}


def _llava_qwen2():
    # Qwen2 decoder with tied embeddings (as Qwen2-0.5B), "full" strategy on the last layer
    # (LLaVA-OneVision style), so CLS is kept and feature_layer -1 is used.
    text = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
            "num_hidden_layers": 2, "num_key_value_heads": 2, "max_position_embeddings": 512,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
            "vocab_size": 448}
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "image_size": 48,
              "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 3,
              "patch_size": 16, "projection_dim": 24, "hidden_act": "gelu"}
    return {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
            "ignore_index": -100, "image_token_index": 440, "projector_hidden_act": "gelu",
            "text_config": text, "vision_config": vision, "vision_feature_layer": -1,
            "vision_feature_select_strategy": "full"}


def _llava_next():
    # Like llava-hf/llava-v1.6-mistral-7b-hf scaled down: Mistral decoder (a sliding window shorter
    # than an image's features, so the window matters), CLIP tower 32 px / patch 8 (4x4 features per
    # crop), the five 1.6 pinpoints scaled by 32/336, image token 300, newer saves' key names.
    text = {"model_type": "mistral", "hidden_size": 48, "intermediate_size": 112,
            "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
            "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
            "sliding_window": 40, "vocab_size": 320}
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "image_size": 32,
              "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
              "patch_size": 8, "projection_dim": 24}
    return {"architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next",
            "ignore_index": -100, "image_token_index": 300, "projector_hidden_act": "gelu",
            "image_grid_pinpoints": [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]],
            "text_config": text, "vision_config": vision, "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default", "use_image_newline_parameter": True}


def _qwen2_vl():
    # Like Qwen/Qwen2-VL-2B-Instruct's config.json scaled down: text fields at the top level, tied
    # embeddings, rope_scaling {"type": "mrope"} with mrope_section summing to head_dim / 2 = 8;
    # vision: 4 px patches, temporal patch 2, 2x2 merge, embed_dim 32 (head_dim 16), "in_chans".
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
        "attention_dropout": 0.0, "bos_token_id": 380, "eos_token_id": 381, "hidden_act": "silu",
        "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
        "max_position_embeddings": 1024, "max_window_layers": 2, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "sliding_window": 1024, "tie_word_embeddings": True, "use_cache": True, "use_sliding_window": False,
        "vocab_size": 400, "vision_start_token_id": 388, "vision_end_token_id": 389,
        "vision_token_id": 390, "image_token_id": 391, "video_token_id": 392,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "vision_config": {"depth": 2, "embed_dim": 32, "mlp_ratio": 2, "num_heads": 2, "in_chans": 3,
                          "hidden_size": 64, "patch_size": 4, "spatial_merge_size": 2,
                          "spatial_patch_size": 4, "temporal_patch_size": 2},
    }


def _phi3_v():
    # Like microsoft/Phi-3.5-vision-instruct's config.json scaled down: Phi-3 text fields at the top
    # level, rope_scaling "su" with short/long factors (head_dim / 2 = 8 each) and
    # original_max_position_embeddings 64 (so text-only inputs use the short factors and image inputs
    # the long ones), GQA 4/2 (the real model is 32/32), the HD image embedding. The CLIP tower keeps
    # the 336 px / 14 px geometry the processor hard-codes (24 x 24 patches -> 12 x 12 merged) but is
    # narrow and shallow, via img_processor.vision_config (a unime extension: the remote code always
    # builds CLIP ViT-L/14-336).
    half = 8
    return {
        "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v",
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "embd_pdrop": 0.0,
        "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
                       "use_hd_transform": True, "with_learnable_separator": True},
        "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "img_processor": {"image_dim_out": 32, "model_name": "openai/clip-vit-large-patch14-336",
                          "name": "clip_vision_model", "num_img_tokens": 144,
                          "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                            "num_hidden_layers": 3}},
        "intermediate_size": 96, "max_position_embeddings": 4096, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_key_value_heads": 2, "original_max_position_embeddings": 64,
        "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-5,
        "rope_scaling": {"long_factor": [1.0 + 0.7 * k for k in range(half)],
                         "short_factor": [1.0 + 0.05 * k for k in range(half)], "type": "su"},
        "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": False, "use_cache": True,
        "vocab_size": 32064,
    }


ARCHS = {"llama": _llama, "llama3": _llama3, "mistral": _mistral, "qwen2": _qwen2,
         "clip_vision": _clip_vision, "clip": _clip, "llava": _llava, "llava_qwen2": _llava_qwen2,
         "llava_next": _llava_next, "qwen2_vl": _qwen2_vl, "phi3_v": _phi3_v}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OPENAI_CLIP_MEAN (image_utils.py)
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]  # OPENAI_CLIP_STD


# ---- config editing ----

def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_set(cfg, assignment):
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    *path, last = key.split(".")
    node = cfg
    for p in path:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[last] = _parse_value(value)


def apply_unset(cfg, key):
    *path, last = key.split(".")
    node = cfg
    for p in path:
        node = node.get(p)
        if not isinstance(node, dict):
            raise ValueError(f"--unset {key}: '{p}' is not a nested object in the config")
    if last not in node:
        raise ValueError(f"--unset {key}: no such key in the config")
    del node[last]


def build_config(arch, layout, dtype, sets=(), unsets=()):
    cfg = ARCHS[arch]()
    cfg["torch_dtype"] = dtype
    cfg["transformers_version"] = TRANSFORMERS_VERSION[layout]
    if cfg["model_type"] in ("llava", "llava_next"):
        cfg["text_config"]["torch_dtype"] = dtype
        # image_seq_length (the processor's <image> expansion; the forward ignores it) is filled
        # below from the vision config so that the tiny processor and model agree
        cfg["image_seq_length"] = None
        if layout == "new":  # newer saves: image_token_id and an explicit projector bias
            cfg["image_token_id"] = cfg.pop("image_token_index")
            cfg["multimodal_projector_bias"] = True
    for s in sets:
        apply_set(cfg, s)
    for u in unsets:
        apply_unset(cfg, u)
    if cfg.get("model_type") in ("llava", "llava_next") and "image_seq_length" in cfg and cfg["image_seq_length"] is None:
        r = reference.resolve_config(copy.deepcopy(cfg))
        vc = r["vision_config"]
        cfg["image_seq_length"] = vc["num_patches"] + (r["vision_feature_select_strategy"] == "full")
    return cfg


def preprocessor_config(image_size, model_type, pinpoints=None):
    if model_type == "llava_next":  # LlavaNextImageProcessor, as llava-v1.6-mistral-7b-hf saves it
        c = preprocessor_config(image_size, "llava")
        c.update({"image_processor_type": "LlavaNextImageProcessor", "processor_class": "LlavaNextProcessor",
                  "image_grid_pinpoints": pinpoints, "aspect_ratio_setting": "anyres", "do_pad": True})
        return c
    return {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
        "do_resize": True, "image_mean": CLIP_MEAN, "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD, "processor_class": "LlavaProcessor" if model_type == "llava" else "CLIPProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": image_size},
    }


# ---- weights ----

def init_tensor(gen, shape, init):
    def normal(std, mean=0.0):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean
    if init == "linear":
        return normal(1.0 / math.sqrt(shape[1]))
    if init == "conv":
        return normal(1.0 / math.sqrt(shape[1] * shape[2] * shape[3]))
    if init == "conv3d":
        return normal(1.0 / math.sqrt(shape[1] * shape[2] * shape[3] * shape[4]))
    if init == "embed" or init == "class_emb":
        return normal(1.0)
    if init == "pos_emb":
        return normal(0.5)
    if init in ("bias", "norm_b"):
        return normal(0.2)
    if init == "norm_w":
        return normal(0.2, 1.0)
    if init == "scalar":
        return torch.tensor(2.6592, dtype=torch.float32)  # CLIPConfig.logit_scale_init_value
    raise ValueError(f"unknown init kind {init}")


def make_weights(resolved, seed, dtype, layout, with_position_ids):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape, init in reference.param_specs(resolved):
        t = init_tensor(gen, shape, init).to(dtype)
        if resolved["kind"] in ("llava", "llava_next"):
            key = reference.llava_key_to_layout(key, layout)
        if resolved["kind"] == "qwen2_vl":
            key = reference.qwen2vl_key_to_layout(key, layout)
        out[key] = t
    if with_position_ids:  # persistent buffers in older CLIP exports; HF ignores them on load
        vcs = {"clip_vision": [("vision_model.", resolved)], "clip": [("vision_model.", resolved.get("vision_config"))],
               "llava": [("vision_tower.vision_model.", resolved.get("vision_config"))]}.get(resolved["kind"], [])
        for prefix, vc in vcs:
            key = prefix + "embeddings.position_ids"
            if resolved["kind"] == "llava":
                key = reference.llava_key_to_layout(key, layout)
            out[key] = torch.arange(vc["num_patches"] + 1, dtype=torch.int64)[None]
        if resolved["kind"] == "clip":
            n = resolved["text_config"]["max_position_embeddings"]
            out["text_model.embeddings.position_ids"] = torch.arange(n, dtype=torch.int64)[None]
    return out


def write_checkpoint(weights, out_dir, shards, metadata):
    if shards <= 1:
        st.save_torch(weights, os.path.join(out_dir, "model.safetensors"), metadata)
        return
    keys = list(weights)
    per = math.ceil(len(keys) / shards)
    weight_map, total = {}, 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: weights[k] for k in keys[s * per:(s + 1) * per]}
        st.save_torch(part, os.path.join(out_dir, name), metadata)
        for k, v in part.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)


def generate(arch, seed, out_dir, layout="legacy", dtype="float32", sets=(), unsets=(), shards=1,
             with_position_ids=False):
    """Python API used by the self-test; returns the resolved config."""
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch '{arch}'; expected one of {sorted(ARCHS)}")
    cfg = build_config(arch, layout, dtype, sets, unsets)
    resolved = reference.resolve_config(copy.deepcopy(cfg), "config (after --set/--unset)")
    os.makedirs(out_dir, exist_ok=True)
    for stale in os.listdir(out_dir):
        if stale.startswith("model") and (stale.endswith(".safetensors") or stale.endswith(".index.json")):
            os.remove(os.path.join(out_dir, stale))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    weights = make_weights(resolved, seed, reference.DTYPES[dtype], layout, with_position_ids)
    write_checkpoint(weights, out_dir, shards, {"format": "pt"})
    if resolved["kind"] == "qwen2_vl":  # Qwen2VLImageProcessor, small pixel budget
        v = resolved["vision_config"]
        with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
            json.dump({"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                       "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "image_processor_type": "Qwen2VLImageProcessor",
                       "max_pixels": 2048, "merge_size": v["spatial_merge_size"], "min_pixels": 128,
                       "patch_size": v["patch_size"], "processor_class": "Qwen2VLProcessor", "resample": 3,
                       "rescale_factor": 1 / 255, "temporal_patch_size": v["temporal_patch_size"]},
                      f, indent=2, sort_keys=True)
            f.write("\n")
    if resolved["kind"] == "phi3_v":  # Phi3VImageProcessor, as Phi-3.5-vision-instruct saves it
        with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
            json.dump({"do_convert_rgb": True, "image_mean": CLIP_MEAN, "image_processor_type": "Phi3VImageProcessor",
                       "image_std": CLIP_STD, "num_crops": 4, "num_img_tokens": 144,
                       "processor_class": "Phi3VProcessor"}, f, indent=2, sort_keys=True)
            f.write("\n")
    vc = {"clip_vision": resolved, "clip": resolved.get("vision_config"),
          "llava": resolved.get("vision_config"), "llava_next": resolved.get("vision_config")}.get(resolved["kind"])
    if vc is not None:
        with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
            json.dump(preprocessor_config(vc["image_size"], cfg["model_type"], resolved.get("image_grid_pinpoints")),
                      f, indent=2, sort_keys=True)
            f.write("\n")
    return resolved


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", required=True, choices=sorted(ARCHS))
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layout", default="legacy", choices=["legacy", "new"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    ap.add_argument("--unset", action="append", default=[], dest="unsets", metavar="KEY")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--with-position-ids", action="store_true",
                    help="also write CLIP embeddings.position_ids buffers (as older exports do)")
    args = ap.parse_args(argv)
    try:
        generate(args.arch, args.seed, args.out, args.layout, args.dtype, args.sets, args.unsets,
                 args.shards, args.with_position_ids)
    except (ValueError, reference.RefError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
