#!/usr/bin/env python3
"""Pillow / numpy references for tests/test-image.cpp and tests/test-clip-processor.cpp.

Usage: pil_ref.py JOBS.json   (run with /usr/bin/python3: Debian's python3-pil and python3-numpy)

JOBS.json is a list of jobs; each has an "op":
  {"op": "make_images", "dir": D, "seed": S}
      writes test images with Pillow's own encoders (PNG in modes RGB/RGBA/L/LA/P/1/I;16,
      16-bit RGB, JPEG baseline/progressive/grey, BMP, GIF) and D/images.json listing them.
  {"op": "decode", "src": IMG, "out": RAW}
      Image.open(IMG).convert("RGB") -> RAW (uint8 HWC bytes); RAW.json holds [h, w].
  {"op": "resize", "src": IMG, "width": W, "height": H, "filter": F, "out": RAW}
      Image.open(IMG).convert("RGB").resize((W, H), resample=F, reducing_gap=None) -> RAW.
  {"op": "clip", "src": IMG, "config": PREPROCESSOR_CONFIG, "out": NPY}
      numpy re-implementation of transformers' CLIPImageProcessor.preprocess (HF itself is not
      installed here), following image_processing_clip.py and image_transforms.py:
      convert_rgb, resize via PIL (get_resize_output_image_size with default_to_square=False),
      center_crop with zero padding, rescale in float64 -> float32, normalize in float32, CHW;
      saved as float32 [1, 3, H, W].
  {"op": "llava_next", "src": IMG, "config": PREPROCESSOR_CONFIG, "out": NPY}
      numpy + PIL re-implementation of LlavaNextImageProcessor.preprocess for one image
      (image_processing_llava_next.py: select_best_resolution, _resize_for_patching,
      _pad_for_patching, divide_to_patches, the base image resized to size x size, then _preprocess
      on each crop) -> float32 [1 + tiles, 3, S, S]; NPY.json holds {"image_size": [h, w],
      "num_image_tokens": n} with n from LlavaNextProcessor._get_number_of_features (minus 1 for
      the "default" strategy, num_additional_image_tokens 1, as llava-v1.6 processors are saved).
  {"op": "qwen2vl", "src": IMG, "config": PREPROCESSOR_CONFIG, "out": NPY}
      numpy + PIL re-implementation of Qwen2VLImageProcessor._preprocess for one image
      (image_processing_qwen2_vl.py: smart_resize, PIL resize, rescale, normalize, the frame repeated
      to temporal_patch_size, the 9-D reshape/transpose into merge-ordered patches) -> float32
      [t*gh*gw, C*tp*p*p]; NPY.json holds {"image_grid_thw": [t, gh, gw], "num_image_tokens": n}
      with n = t*gh*gw // merge_size**2 (processing_qwen2_vl.py).
  {"op": "phi3_v", "src": IMG, "config": PREPROCESSOR_CONFIG, "out": NPY}
      Phi3VImageProcessor.preprocess for one image (phi3v_ref.preprocess: HD_transform with PIL,
      ToTensor/Normalize and the bicubic global image with torch) -> float32 [1 + crops, 3, 336, 336];
      NPY.json holds {"image_size": [H, W] (HD), "num_image_tokens": n}.
"""
import json
import math
import sys

import numpy as np
from PIL import Image

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def save_raw(arr, out):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    with open(out, "wb") as f:
        f.write(arr.tobytes())
    with open(out + ".json", "w") as f:
        json.dump(list(arr.shape[:2]), f)


def make_images(d, seed):
    rng = np.random.default_rng(seed)
    listing = []

    def smooth(h, w, c):
        # gradients + noise: JPEG-friendly content with real structure
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)),
                         ((x + y) * 127 // max(w + h - 2, 1))], -1)[..., :c]
        return np.clip(base + rng.integers(-20, 21, (h, w, c)), 0, 255).astype(np.uint8)

    def add(name, img, **kw):
        path = f"{d}/{name}"
        img.save(path, **kw)
        listing.append({"file": path, "exact": not name.endswith((".jpg", ".gif"))})

    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    add("rgb.png", Image.fromarray(rgb, "RGB"))
    add("rgba.png", Image.fromarray(rng.integers(0, 256, (20, 31, 4), dtype=np.uint8), "RGBA"))
    add("l.png", Image.fromarray(rng.integers(0, 256, (19, 23), dtype=np.uint8), "L"))
    add("la.png", Image.fromarray(rng.integers(0, 256, (17, 11, 2), dtype=np.uint8), "LA"))
    add("p.png", Image.fromarray(rgb, "RGB").quantize(colors=50))
    add("bw.png", Image.fromarray(rng.integers(0, 2, (13, 29), dtype=np.uint8) * 255, "L").convert("1"))
    add("i16.png", Image.fromarray(rng.integers(0, 1024, (9, 14)).astype(np.uint16), "I;16"))
    add("one_by_n.png", Image.fromarray(rng.integers(0, 256, (1, 40, 3), dtype=np.uint8), "RGB"))
    add("rgb.bmp", Image.fromarray(rgb, "RGB"))
    add("smooth.jpg", Image.fromarray(smooth(120, 160, 3), "RGB"), quality=90)
    add("smooth_444.jpg", Image.fromarray(smooth(64, 80, 3), "RGB"), quality=95, subsampling=0)
    add("progressive.jpg", Image.fromarray(smooth(75, 99, 3), "RGB"), quality=85, progressive=True)
    add("grey.jpg", Image.fromarray(smooth(50, 70, 1)[..., 0], "L"), quality=90)
    add("p.gif", Image.fromarray(rgb, "RGB").quantize(colors=64))
    # 16-bit RGB PNG: Pillow cannot write it from a mode, so build the file by hand
    import struct, zlib
    h16 = rng.integers(0, 65536, (7, 9, 3)).astype(">u2")
    raw = b"".join(b"\x00" + h16[r].tobytes() for r in range(7))

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 9, 7, 16, 2, 0, 0, 0)) +
           chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with open(f"{d}/rgb16.png", "wb") as f:
        f.write(png)
    listing.append({"file": f"{d}/rgb16.png", "exact": True})
    with open(f"{d}/images.json", "w") as f:
        json.dump(listing, f)


# ---- CLIPImageProcessor, re-implemented with numpy + PIL --------------------

def get_size_dict(size, default_to_square):
    if isinstance(size, dict):
        return size
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)):
        return {"height": size[0], "width": size[1]}
    raise ValueError(size)


def get_resize_output_image_size(h, w, size, default_to_square):
    if isinstance(size, (tuple, list)):
        return tuple(size)
    if default_to_square:
        return (size, size)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def center_crop(image, crop_h, crop_w):  # image: HWC
    orig_h, orig_w = image.shape[:2]
    top = (orig_h - crop_h) // 2
    bottom = top + crop_h
    left = (orig_w - crop_w) // 2
    right = left + crop_w
    if top >= 0 and bottom <= orig_h and left >= 0 and right <= orig_w:
        return image[top:bottom, left:right]
    new_h, new_w = max(crop_h, orig_h), max(crop_w, orig_w)
    new_image = np.zeros_like(image, shape=(new_h, new_w) + image.shape[2:])
    top_pad = math.ceil((new_h - orig_h) / 2)
    left_pad = math.ceil((new_w - orig_w) / 2)
    new_image[top_pad:top_pad + orig_h, left_pad:left_pad + orig_w] = image
    top += top_pad
    bottom += top_pad
    left += left_pad
    right += left_pad
    return new_image[max(0, top):min(new_h, bottom), max(0, left):min(new_w, right)]


def clip_preprocess(src, cfg_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    size = get_size_dict(cfg.get("size", {"shortest_edge": 224}), default_to_square=False)
    if cfg.get("use_square_size"):
        size = {"height": size["shortest_edge"], "width": size["shortest_edge"]}
    crop = get_size_dict(cfg.get("crop_size", {"height": 224, "width": 224}), default_to_square=True)
    resample = cfg.get("resample", 3)
    mean = cfg.get("image_mean", OPENAI_CLIP_MEAN)
    std = cfg.get("image_std", OPENAI_CLIP_STD)
    if not isinstance(mean, list):
        mean = [mean] * 3
    if not isinstance(std, list):
        std = [std] * 3

    pil = Image.open(src).convert("RGB")  # convert_to_rgb
    image = np.array(pil)                  # to_numpy_array: HWC uint8
    if cfg.get("do_resize", True):
        if "shortest_edge" in size:
            out = get_resize_output_image_size(*image.shape[:2], size["shortest_edge"], False)
        else:
            out = (size["height"], size["width"])
        h, w = out
        image = np.array(Image.fromarray(image).resize((w, h), resample=resample, reducing_gap=None))
    if cfg.get("do_center_crop", True):
        image = center_crop(image, crop["height"], crop["width"])
    if cfg.get("do_rescale", True):
        image = (image.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    if cfg.get("do_normalize", True):
        if not np.issubdtype(image.dtype, np.floating):
            image = image.astype(np.float32)
        m = np.array(mean, dtype=image.dtype)
        s = np.array(std, dtype=image.dtype)
        image = (image - m) / s
    image = image.astype(np.float32).transpose(2, 0, 1)[None]  # [1, 3, H, W]
    return np.ascontiguousarray(image)


# ---- LlavaNextImageProcessor / LlavaNextProcessor, re-implemented ----------

def select_best_resolution(original_size, possible_resolutions):
    original_height, original_width = original_size
    best_fit, max_effective, min_wasted = None, 0, float("inf")
    for height, width in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        dw, dh = int(original_width * scale), int(original_height * scale)
        effective = min(dw * dh, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best_fit = effective, wasted, (height, width)
    return best_fit


def _patch_output_size(h, w, target):
    th, tw = target
    scale_w, scale_h = tw / w, th / h
    if scale_w < scale_h:
        return min(math.ceil(h * scale_w), th), tw
    return th, min(math.ceil(w * scale_h), tw)


def _pil_resize(image, h, w, resample):
    return np.array(Image.fromarray(image).resize((w, h), resample=resample, reducing_gap=None))


def llava_next_preprocess(src, cfg_path):
    with open(cfg_path) as f:
        cfg = json.load(f)
    size = get_size_dict(cfg.get("size", {"shortest_edge": 224}), default_to_square=False)
    crop = get_size_dict(cfg.get("crop_size", {"height": 224, "width": 224}), default_to_square=True)
    pins = cfg.get("image_grid_pinpoints", [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])
    resample = cfg.get("resample", 3)
    mean = np.array(cfg.get("image_mean", OPENAI_CLIP_MEAN), dtype=np.float32)
    std = np.array(cfg.get("image_std", OPENAI_CLIP_STD), dtype=np.float32)
    image = np.array(Image.open(src).convert("RGB"))
    h, w = image.shape[:2]
    best = select_best_resolution((h, w), pins)
    nh, nw = _patch_output_size(h, w, best)
    resized = _pil_resize(image, nh, nw, resample)
    paste_x, r_x = divmod(best[1] - nw, 2)
    paste_y, r_y = divmod(best[0] - nh, 2)
    padded = np.pad(resized, ((paste_y, paste_y + r_y), (paste_x, paste_x + r_x), (0, 0)))
    P = crop["height"]
    patches = [padded[i:i + P, j:j + P] for i in range(0, best[0], P) for j in range(0, best[1], P)]
    base_side = size["shortest_edge"] if "shortest_edge" in size else min(size["height"], size["width"])
    crops = [_pil_resize(image, base_side, base_side, resample)] + patches
    out = []
    for im in crops:  # _preprocess: resize (shortest edge), center crop, rescale, normalize
        if "shortest_edge" in size:
            oh, ow = get_resize_output_image_size(*im.shape[:2], size["shortest_edge"], False)
        else:
            oh, ow = size["height"], size["width"]
        im = _pil_resize(im, oh, ow, resample) if (oh, ow) != im.shape[:2] else im
        im = center_crop(im, crop["height"], crop["width"])
        x = (im.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
        out.append(((x - mean) / std).astype(np.float32).transpose(2, 0, 1))
    # processing_llava_next.py: _get_number_of_features(orig_height, orig_width, height, width)
    patch_size = cfg.get("patch_size_for_tokens")  # the vision patch size, passed by the test
    height, width = out[0].shape[1:]
    bh, bw = best
    scale_height, scale_width = bh // height, bw // width
    patches_height, patches_width = height // patch_size, width // patch_size
    current_height, current_width = patches_height * scale_height, patches_width * scale_width
    if w / h > current_width / current_height:
        new_height = int(round(h * (current_width / w), 7))
        current_height -= ((current_height - new_height) // 2) * 2
    else:
        new_width = int(round(w * (current_height / h), 7))
        current_width -= ((current_width - new_width) // 2) * 2
    unpadded, newline = current_height * current_width, current_height
    base = patches_height * patches_width + 1  # num_additional_image_tokens = 1 (the CLS)
    n_tokens = unpadded + newline + base - 1   # "default" strategy drops the CLS
    return np.ascontiguousarray(np.stack(out)), {"image_size": [h, w], "num_image_tokens": n_tokens}


# ---- Qwen2VLImageProcessor, re-implemented ----------------------------------

def smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 1280):
    if max(height, width) / min(height, width) > 200:
        raise ValueError("absolute aspect ratio must be smaller than 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen2vl_preprocess(src, cfg):
    p, tp, m = cfg.get("patch_size", 14), cfg.get("temporal_patch_size", 2), cfg.get("merge_size", 2)
    min_pixels, max_pixels = cfg.get("min_pixels", 56 * 56), cfg.get("max_pixels", 28 * 28 * 1280)
    mean = np.array(cfg.get("image_mean", OPENAI_CLIP_MEAN), dtype=np.float32)
    std = np.array(cfg.get("image_std", OPENAI_CLIP_STD), dtype=np.float32)
    image = np.array(Image.open(src).convert("RGB"))
    h, w = image.shape[:2]
    rh, rw = smart_resize(h, w, factor=p * m, min_pixels=min_pixels, max_pixels=max_pixels)
    image = np.array(Image.fromarray(image).resize((rw, rh), resample=cfg.get("resample", 3), reducing_gap=None))
    x = (image.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    x = ((x - mean) / std).astype(np.float32).transpose(2, 0, 1)   # CHW
    patches = np.array([x])
    if patches.shape[0] % tp != 0:
        repeats = np.repeat(patches[-1][np.newaxis], tp - 1, axis=0)
        patches = np.concatenate([patches, repeats], axis=0)
    channel = patches.shape[1]
    grid_t = patches.shape[0] // tp
    grid_h, grid_w = rh // p, rw // p
    patches = patches.reshape(grid_t, tp, channel, grid_h // m, m, p, grid_w // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channel * tp * p * p)
    return np.ascontiguousarray(flat), {"image_grid_thw": [grid_t, grid_h, grid_w],
                                        "num_image_tokens": grid_t * grid_h * grid_w // (m * m)}


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        op = job["op"]
        if op == "make_images":
            make_images(job["dir"], job.get("seed", 0))
        elif op == "decode":
            save_raw(np.array(Image.open(job["src"]).convert("RGB")), job["out"])
        elif op == "resize":
            im = Image.open(job["src"]).convert("RGB")
            out = im.resize((job["width"], job["height"]), resample=job["filter"], reducing_gap=None)
            save_raw(np.array(out), job["out"])
        elif op == "clip":
            np.save(job["out"], clip_preprocess(job["src"], job["config"]))
        elif op == "qwen2vl":
            with open(job["config"]) as f:
                arr, info = qwen2vl_preprocess(job["src"], json.load(f))
            np.save(job["out"], arr)
            with open(job["out"] + ".json", "w") as f:
                json.dump(info, f)
        elif op == "phi3_v":
            import os
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            sys.dont_write_bytecode = True
            import phi3v_ref
            with open(job["config"]) as f:
                arr, info = phi3v_ref.preprocess(job["src"], json.load(f))
            np.save(job["out"], arr)
            with open(job["out"] + ".json", "w") as f:
                json.dump(info, f)
        elif op == "llava_next":
            with open(job["config"]) as f:
                cfg = json.load(f)
            cfg["patch_size_for_tokens"] = job["patch_size"]
            cfg_path = job["out"] + ".cfg.json"
            with open(cfg_path, "w") as f:
                json.dump(cfg, f)
            arr, info = llava_next_preprocess(job["src"], cfg_path)
            np.save(job["out"], arr)
            with open(job["out"] + ".json", "w") as f:
                json.dump(info, f)
        else:
            raise SystemExit(f"pil_ref.py: unknown op {op}")


if __name__ == "__main__":
    main()
