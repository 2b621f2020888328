#!/usr/bin/python3
"""test-gen-selftest.py - checks tests/gen/{st,tiny_models,reference}.py against facts derived by hand.

The parity tests of the C++ models trust tests/gen/reference.py, so this test checks the reference
itself: (1) against a second, loop-based numpy float64 implementation written from the papers'
equations (per-head, per-position loops, RoPE as explicit pair rotations, LayerNorm/RMSNorm by
formula, conv as explicit patch extraction), and (2) against invariants that a wrong
implementation breaks: RoPE identity at position 0 and relative-position invariance, GQA vs an
equivalent MHA, sliding-window receptive field, causality, embedding rows, key layouts, LLaVA
token expansion, bf16 closeness, determinism, and one-line errors on bad input.

Run: /usr/bin/python3 tests/test-gen-selftest.py   (registered in tests/gen-selftest.cmake)
"""
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen")
sys.dont_write_bytecode = True  # keep tests/gen free of __pycache__
sys.path.insert(0, GEN)
import reference  # noqa: E402
import st  # noqa: E402
import tiny_models  # noqa: E402

torch.set_num_threads(1)
TMP = tempfile.TemporaryDirectory(prefix="unime-gen-selftest-")


def gen(arch, seed=1, name=None, **kw):
    out = os.path.join(TMP.name, name or f"{arch}-{seed}-{abs(hash(json.dumps(kw, sort_keys=True)))}")
    tiny_models.generate(arch, seed, out, **kw)
    return out


def np_weights(model_dir):
    return {k: v.double().numpy() for k, v in st.load_checkpoint_torch(model_dir).items()}


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


# ---- independent numpy float64 implementation (loops; written from the equations) ----

def np_rms(x, w, eps):
    return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))


def np_ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_act(name, x):
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if name == "gelu":
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    raise AssertionError(name)


def np_inv_freq(rope_theta, d, scaling=None):
    """theta_j = base^(-2j/d); llama3 rule per frequency, written as plain if/else.
    HF stores inv_freq as float32, so the result is rounded to float32 too."""
    out = []
    for j in range(d // 2):
        f = rope_theta ** (-(2.0 * j) / d)
        if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
            factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
            old = scaling["original_max_position_embeddings"]
            wavelen = 2 * math.pi / f
            if wavelen < old / hi:
                pass                                   # high frequency: unchanged
            elif wavelen > old / lo:
                f = f / factor                         # low frequency: interpolated
            else:
                s = (old / wavelen - lo) / (hi - lo)   # medium: smooth blend
                f = (1 - s) * f / factor + s * f
        elif scaling and scaling.get("rope_type", scaling.get("type")) == "linear":
            f = f / scaling["factor"]
        out.append(f)
    return np.array(out, dtype=np.float32).astype(np.float64)


def np_rotate(vec, pos, inv):
    """Rotates pairs (j, j + d/2) by angle pos * inv[j] (the 'rotate_half' pairing)."""
    half = len(vec) // 2
    out = np.empty_like(vec)
    for j in range(half):
        a = pos * inv[j]
        x1, x2 = vec[j], vec[j + half]
        out[j] = x1 * math.cos(a) - x2 * math.sin(a)
        out[j + half] = x2 * math.cos(a) + x1 * math.sin(a)
    return out


TEXT_DEFAULTS = {  # written down again here, from the HF config classes
    "llama": dict(rope_theta=10000.0, rms_norm_eps=1e-6, hidden_act="silu", attention_bias=False, mlp_bias=False),
    "mistral": dict(rope_theta=10000.0, rms_norm_eps=1e-6, hidden_act="silu", sliding_window=4096),
    "qwen2": dict(rope_theta=10000.0, rms_norm_eps=1e-6, hidden_act="silu", use_sliding_window=False,
                  sliding_window=4096, max_window_layers=28),
}


def np_decoder(raw, W, prefix, x):
    """raw text config dict, W numpy weights, x [T, D] input embeddings -> list of L+1 [T, D]."""
    mt = raw.get("model_type", "llama")
    c = dict(TEXT_DEFAULTS[mt])
    c.update(raw)
    D, H, L = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    Hkv = c.get("num_key_value_heads") or H
    d = c.get("head_dim") or D // H
    inv = np_inv_freq(c["rope_theta"], d, c.get("rope_scaling"))
    T = x.shape[0]
    eps = c["rms_norm_eps"]

    def lin(h, name):
        y = h @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    hs = []
    for l in range(L):
        hs.append(x)
        p = f"{prefix}layers.{l}."
        if mt == "mistral":
            window = c["sliding_window"]
        elif mt == "qwen2" and c["use_sliding_window"] and l >= c["max_window_layers"]:
            window = c["sliding_window"]
        else:
            window = None
        h = np_rms(x, W[p + "input_layernorm.weight"], eps)
        q, k, v = lin(h, p + "self_attn.q_proj"), lin(h, p + "self_attn.k_proj"), lin(h, p + "self_attn.v_proj")
        att = np.zeros((T, H * d))
        for t in range(T):
            for hh in range(H):
                g = hh // (H // Hkv)  # kv head shared by H/Hkv consecutive query heads
                qv = np_rotate(q[t, hh * d:(hh + 1) * d], t, inv)
                keys = [s for s in range(t + 1) if window is None or t - s < window]
                sc = np.array([qv @ np_rotate(k[s, g * d:(g + 1) * d], s, inv) / math.sqrt(d) for s in keys])
                pr = np.exp(sc - sc.max())
                pr /= pr.sum()
                att[t, hh * d:(hh + 1) * d] = sum(pw * v[s, g * d:(g + 1) * d] for pw, s in zip(pr, keys))
        x = x + lin(att, p + "self_attn.o_proj")
        h = np_rms(x, W[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(np_act(c["hidden_act"], lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"),
                    p + "mlp.down_proj")
    hs.append(np_rms(x, W[prefix + "norm.weight"], eps))
    return hs


def np_clip_encoder(c, W, prefix, x, causal):
    H = c["num_attention_heads"]
    S, D = x.shape
    d = D // H
    eps = c.get("layer_norm_eps", 1e-5)
    act = c.get("hidden_act", "quick_gelu")
    hs = [x]
    for l in range(c["num_hidden_layers"]):
        p = f"{prefix}encoder.layers.{l}."
        lin = lambda h, n: h @ W[p + n + ".weight"].T + W[p + n + ".bias"]  # noqa: E731
        h = np_ln(x, W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"], eps)
        q, k, v = lin(h, "self_attn.q_proj"), lin(h, "self_attn.k_proj"), lin(h, "self_attn.v_proj")
        att = np.zeros((S, D))
        for t in range(S):
            for hh in range(H):
                sl = slice(hh * d, (hh + 1) * d)
                keys = range(t + 1) if causal else range(S)
                sc = np.array([q[t, sl] @ k[s, sl] / math.sqrt(d) for s in keys])
                pr = np.exp(sc - sc.max())
                pr /= pr.sum()
                att[t, sl] = sum(pw * v[s, sl] for pw, s in zip(pr, keys))
        x = x + lin(att, "self_attn.out_proj")
        h = np_ln(x, W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"], eps)
        x = x + lin(np_act(act, lin(h, "mlp.fc1")), "mlp.fc2")
        hs.append(x)
    return hs


def np_clip_vision(c, W, prefix, img):
    """img [C, S, S] -> (hidden_states list [P+1, Dv], pooled [Dv])."""
    p = c["patch_size"]
    g = c["image_size"] // p
    conv = W[prefix + "embeddings.patch_embedding.weight"]
    D = conv.shape[0]
    rows = [W[prefix + "embeddings.class_embedding"]]
    for gy in range(g):          # patches in row-major order, as flatten(2) of the conv output
        for gx in range(g):
            patch = img[:, gy * p:(gy + 1) * p, gx * p:(gx + 1) * p]
            rows.append(conv.reshape(D, -1) @ patch.reshape(-1))
    x = np.stack(rows) + W[prefix + "embeddings.position_embedding.weight"]
    eps = c.get("layer_norm_eps", 1e-5)
    x = np_ln(x, W[prefix + "pre_layrnorm.weight"], W[prefix + "pre_layrnorm.bias"], eps)
    hs = np_clip_encoder(c, W, prefix, x, causal=False)
    pooled = np_ln(hs[-1][0], W[prefix + "post_layernorm.weight"], W[prefix + "post_layernorm.bias"], eps)
    return hs, pooled


def ids_for(vocab, n, seed):
    return [int(t) for t in np.random.RandomState(seed).randint(3, vocab - 64, size=n)]


def run_ref(model_dir, inputs, dtype="float32"):
    return reference.run(model_dir, inputs, dtype)


class SafetensorsIO(unittest.TestCase):
    def test_roundtrip_and_alignment(self):
        path = os.path.join(TMP.name, "rt.safetensors")
        x = torch.randn(3, 5)
        tensors = {"a.f32": x, "b.bf16": x.bfloat16(), "c.i64": torch.arange(7), "d.scalar": torch.tensor(2.5),
                   "e.empty": torch.zeros(0, 4), "f.f64": x.double()}
        st.save_torch(tensors, path, {"k": "v"})
        back, meta = st.load_torch(path)
        self.assertEqual(meta, {"k": "v"})
        for k, v in tensors.items():
            self.assertEqual(back[k].dtype, v.dtype, k)
            self.assertTrue(torch.equal(back[k], v), k)
        header, _, data_off, _ = st.read_header(path)
        self.assertEqual(data_off % 8, 0)
        for k, e in header.items():
            self.assertEqual(e["data_offsets"][0] % back[k].element_size(), 0, k)

    def test_bf16_rounding_matches_torch(self):
        x = torch.randn(1000) * 100
        ours = st.Bf16.from_float32(x.numpy()).bits
        theirs = x.bfloat16().view(torch.int16).numpy().astype(np.uint16)
        self.assertTrue(np.array_equal(ours, theirs))

    def test_corrupt_files_give_one_line_errors(self):
        path = os.path.join(TMP.name, "bad.safetensors")
        st.save_torch({"a": torch.ones(4), "b": torch.ones(4)}, path)
        raw = read_bytes(path)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        cases = {
            "truncated": raw[:-3],
            "header length": (10 ** 9).to_bytes(8, "little") + raw[8:],
            "not json": raw[:8] + b"x" + raw[9:],
        }
        h2 = copy.deepcopy(header)
        h2["b"]["data_offsets"] = [0, 16]
        cases["overlap"] = _with_header(h2, raw[8 + n:])
        h3 = copy.deepcopy(header)
        h3["a"]["dtype"] = "Q7"
        cases["dtype"] = _with_header(h3, raw[8 + n:])
        h4 = copy.deepcopy(header)
        h4["a"]["shape"] = [5]
        cases["size"] = _with_header(h4, raw[8 + n:])
        for what, blob in cases.items():
            with open(path, "wb") as f:
                f.write(blob)
            with self.assertRaises(ValueError, msg=what) as cm:
                st.load(path)
            self.assertIn(path, str(cm.exception))
            self.assertNotIn("\n", str(cm.exception))


def _with_header(header, data):
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data


class Rope(unittest.TestCase):
    def test_position_zero_is_identity(self):
        inv, s = reference.rope_inv_freq({"rope_type": "default", "rope_theta": 10000.0}, 16)
        cos, sin = reference.rope_cos_sin(inv, s, torch.arange(1), torch.float32)
        x = torch.randn(1, 2, 1, 16)
        self.assertTrue(torch.equal(reference.apply_rope(x, cos, sin), x))

    def test_relative_position_invariance(self):
        for rp in ({"rope_type": "default", "rope_theta": 10000.0},
                   tiny_models._llama3()["rope_scaling"] | {"rope_theta": 500000.0}):
            inv, s = reference.rope_inv_freq(rp, 16)
            cos, sin = reference.rope_cos_sin(inv, s, torch.arange(64), torch.float64)
            q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
            rot = lambda v, p: reference.apply_rope(v, cos[p], sin[p])  # noqa: E731
            for m, n, shift in ((3, 1, 7), (10, 10, 50), (0, 5, 30)):
                self.assertAlmostEqual(float(rot(q, m) @ rot(k, n)), float(rot(q, m + shift) @ rot(k, n + shift)),
                                       places=10)
            # and it does depend on the offset (a constant rotation would pass the line above)
            self.assertGreater(abs(float(rot(q, 3) @ rot(k, 1)) - float(rot(q, 9) @ rot(k, 1))), 1e-3)

    def test_rope_matches_pair_rotation(self):
        inv, s = reference.rope_inv_freq({"rope_type": "default", "rope_theta": 10000.0}, 8)
        cos, sin = reference.rope_cos_sin(inv, s, torch.arange(6), torch.float64)
        x = torch.randn(8, dtype=torch.float64)
        npinv = np_inv_freq(10000.0, 8)
        for p in range(6):
            self.assertTrue(np.allclose(reference.apply_rope(x, cos[p], sin[p]).numpy(),
                                        np_rotate(x.numpy(), p, npinv), atol=1e-6))

    def test_llama3_bands(self):
        rp = dict(tiny_models._llama3()["rope_scaling"], rope_theta=500000.0)
        inv, _ = reference.rope_inv_freq(rp, 16)
        plain, _ = reference.rope_inv_freq({"rope_type": "default", "rope_theta": 500000.0}, 16)
        ratio = (plain / inv).numpy()
        self.assertEqual(ratio[0], 1.0)                      # high frequency untouched
        self.assertTrue(np.allclose(ratio[2:], 8.0))         # low frequencies / factor
        self.assertTrue(1.0 < ratio[1] < 8.0)                # medium: smooth blend
        self.assertTrue(np.allclose(inv.numpy(), np_inv_freq(500000.0, 16, rp), rtol=1e-6))


class Decoders(unittest.TestCase):
    T = 20  # > mistral window 8, so the window matters

    def check_against_numpy(self, model_dir, raw_text=None, prefix="model."):
        raw = raw_text or read_config(model_dir)
        W = np_weights(model_dir)
        ids = ids_for(raw["vocab_size"], self.T, 0)
        want = np_decoder(raw, W, prefix, W[prefix + "embed_tokens.weight"][ids])
        for dtype, tol in (("float32", 2e-4), ("float64", 2e-5)):
            out = run_ref(model_dir, [{"input_ids": ids}], dtype)
            for l, h in enumerate(want):
                got = out[f"layer.0.{l}"].double().numpy()
                self.assertLess(np.abs(got - h).max(), tol, f"{model_dir} {dtype} layer {l}")
            self.assertTrue(torch.equal(out["hidden.0"], out[f"layer.0.{len(want) - 1}"]))
            e = want[-1][-1] / np.linalg.norm(want[-1][-1])
            self.assertLess(np.abs(out["emb.0"].double().numpy() - e).max(), tol)

    def test_llama_matches_numpy(self):
        self.check_against_numpy(gen("llama"))

    def test_llama_biases_match_numpy(self):
        m = gen("llama", sets=["attention_bias=true", "mlp_bias=true"])
        keys = st.load_checkpoint_torch(m)
        for k in ("self_attn.q_proj.bias", "self_attn.o_proj.bias", "mlp.down_proj.bias"):
            self.assertIn("model.layers.0." + k, keys)
        self.check_against_numpy(m)

    def test_explicit_head_dim_matches_numpy(self):
        m = gen("llama", sets=["head_dim=8"])  # H*d = 32 != hidden_size 64 (Qwen3/Gemma style)
        self.assertEqual(list(st.load_checkpoint_torch(m)["model.layers.0.self_attn.o_proj.weight"].shape), [64, 32])
        self.check_against_numpy(m)

    def test_llama3_matches_numpy(self):
        self.check_against_numpy(gen("llama3"))

    def test_mistral_matches_numpy(self):
        self.check_against_numpy(gen("mistral"))

    def test_qwen2_matches_numpy(self):
        m = gen("qwen2")
        keys = st.load_checkpoint_torch(m)
        self.assertIn("model.layers.0.self_attn.q_proj.bias", keys)
        self.assertNotIn("model.layers.0.self_attn.o_proj.bias", keys)
        self.check_against_numpy(m)
        self.check_against_numpy(gen("qwen2", sets=["use_sliding_window=true"]))

    def test_qwen2_window_only_with_use_sliding_window(self):
        ids = ids_for(400, self.T, 1)
        off = run_ref(gen("qwen2", seed=3), [{"input_ids": ids}])
        on = run_ref(gen("qwen2", seed=3, sets=["use_sliding_window=true"]), [{"input_ids": ids}])
        self.assertTrue(torch.equal(off["layer.0.1"], on["layer.0.1"]))   # layer 0 < max_window_layers
        self.assertFalse(torch.allclose(off["hidden.0"], on["hidden.0"], atol=1e-3))

    def test_single_token_attention_is_value_path(self):
        m = gen("llama")
        c = reference.load_config(m)
        W, _ = reference.load_weights(m, c, torch.float64)
        x = torch.randn(1, 1, c["hidden_size"], dtype=torch.float64)
        cos, sin = reference.rope_cos_sin(*reference.rope_inv_freq(c["rope"], c["head_dim"]),
                                          torch.arange(1), torch.float64)
        got = reference.decoder_attention(c, W, "model.layers.0.self_attn.", x, cos, sin,
                                          reference.additive_mask(1, torch.float64))
        d, n_rep = c["head_dim"], c["num_attention_heads"] // c["num_key_value_heads"]
        v = (x[0, 0] @ W["model.layers.0.self_attn.v_proj.weight"].T).view(-1, d)  # [Hkv, d]
        want = v.repeat_interleave(n_rep, 0).reshape(-1) @ W["model.layers.0.self_attn.o_proj.weight"].T
        self.assertTrue(torch.allclose(got[0, 0], want, atol=1e-12))

    def test_gqa_equals_mha_with_repeated_kv(self):
        src = gen("llama", seed=5)
        cfg = read_config(src)
        H, Hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        d = cfg["hidden_size"] // H
        self.assertLess(Hkv, H)
        ids = ids_for(cfg["vocab_size"], 12, 2)
        want = run_ref(src, [{"input_ids": ids}])["hidden.0"]
        results = {}
        for order in ("interleave", "tile"):
            W = st.load_checkpoint_torch(src)
            for l in range(cfg["num_hidden_layers"]):
                for n in ("k_proj", "v_proj"):
                    key = f"model.layers.{l}.self_attn.{n}.weight"
                    blocks = W[key].view(Hkv, d, -1)
                    rep = (blocks.repeat_interleave(H // Hkv, 0) if order == "interleave"
                           else blocks.repeat(H // Hkv, 1, 1))
                    W[key] = rep.reshape(H * d, -1)
            mha = os.path.join(TMP.name, f"mha-{order}")
            os.makedirs(mha, exist_ok=True)
            st.save_torch(W, os.path.join(mha, "model.safetensors"))
            with open(os.path.join(mha, "config.json"), "w") as f:
                json.dump(dict(cfg, num_key_value_heads=H), f)
            results[order] = run_ref(mha, [{"input_ids": ids}])["hidden.0"]
        self.assertLess((results["interleave"] - want).abs().max().item(), 1e-5)
        self.assertGreater((results["tile"] - want).abs().max().item(), 1e-2)  # grouping matters

    def test_mistral_wide_window_equals_llama(self):
        m = gen("mistral", seed=4, sets=["sliding_window=64"])
        as_llama = os.path.join(TMP.name, "mistral-as-llama")
        os.makedirs(as_llama, exist_ok=True)
        cfg = read_config(m)
        cfg.pop("sliding_window")
        cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
        with open(os.path.join(as_llama, "config.json"), "w") as f:
            json.dump(cfg, f)
        st.save_torch(st.load_checkpoint_torch(m), os.path.join(as_llama, "model.safetensors"))
        ids = ids_for(320, self.T, 3)
        a = run_ref(m, [{"input_ids": ids}])["hidden.0"]
        b = run_ref(as_llama, [{"input_ids": ids}])["hidden.0"]
        self.assertTrue(torch.equal(a, b))
        narrow = run_ref(gen("mistral", seed=4), [{"input_ids": ids}])["hidden.0"]
        self.assertTrue(torch.equal(narrow[:8], a[:8]))              # inside the window: same
        self.assertGreater((narrow[8:] - a[8:]).abs().max().item(), 1e-3)

    def test_sliding_window_receptive_field(self):
        m = gen("mistral", seed=6)
        cfg = read_config(m)
        W_, L = cfg["sliding_window"], cfg["num_hidden_layers"]
        t = 19
        edge = t - L * (W_ - 1)       # earliest position that can still reach t through L layers
        ids = ids_for(320, t + 1, 4)
        base = run_ref(m, [{"input_ids": ids}])["hidden.0"][t]
        for pos, should_change in ((edge - 1, False), (edge, True)):
            changed = list(ids)
            changed[pos] = (changed[pos] + 17) % 300 + 3
            got = run_ref(m, [{"input_ids": changed}])["hidden.0"][t]
            self.assertEqual(not torch.equal(got, base), should_change, f"position {pos}")

    def test_causal(self):
        m = gen("llama3")
        ids = ids_for(512, 10, 5)
        a = run_ref(m, [{"input_ids": ids}])["hidden.0"]
        b = run_ref(m, [{"input_ids": ids[:-1] + [ids[-1] + 1]}])["hidden.0"]
        self.assertTrue(torch.equal(a[:-1], b[:-1]))
        self.assertFalse(torch.equal(a[-1], b[-1]))

    def test_layer0_is_embedding_rows(self):
        m = gen("qwen2")
        ids = ids_for(400, 7, 6)
        out = run_ref(m, [{"input_ids": ids}])
        E = st.load_checkpoint_torch(m)["model.embed_tokens.weight"]
        self.assertTrue(torch.equal(out["layer.0.0"], E[ids]))

    def test_tied_and_untied_keys(self):
        self.assertIn("lm_head.weight", st.load_checkpoint_torch(gen("llama")))
        self.assertNotIn("lm_head.weight", st.load_checkpoint_torch(gen("llama3")))
        self.assertTrue(read_config(gen("llama3"))["tie_word_embeddings"])

    def test_unset_uses_hf_default(self):
        m = gen("llama", unsets=["rms_norm_eps", "rope_theta", "num_key_value_heads"],
                sets=["num_key_value_heads=4"], name="llama-unset")
        c = reference.load_config(m)
        self.assertEqual(c["rms_norm_eps"], 1e-6)
        self.assertEqual(c["rope"]["rope_theta"], 10000.0)
        m2 = gen("llama", unsets=["num_key_value_heads"], name="llama-nokv")
        self.assertEqual(reference.load_config(m2)["num_key_value_heads"], 4)  # None -> heads
        self.check_against_numpy(m2)

    def test_bf16_close_but_not_equal(self):
        m = gen("llama")
        ids = ids_for(384, 12, 7)
        a = run_ref(m, [{"input_ids": ids}], "float32")["emb.0"]
        b = run_ref(m, [{"input_ids": ids}], "bfloat16")["emb.0"]
        self.assertEqual(b.dtype, torch.float32)
        self.assertFalse(torch.equal(a, b))
        self.assertGreater(float(a @ b), 0.99)
        mb = gen("llama", dtype="bfloat16")
        self.assertEqual(st.load_checkpoint_torch(mb)["model.norm.weight"].dtype, torch.bfloat16)
        self.assertEqual(read_config(mb)["torch_dtype"], "bfloat16")

    def test_deterministic_for_seed(self):
        a = read_bytes(os.path.join(gen("qwen2", seed=9, name="det-a"), "model.safetensors"))
        b = read_bytes(os.path.join(gen("qwen2", seed=9, name="det-b"), "model.safetensors"))
        c = read_bytes(os.path.join(gen("qwen2", seed=10, name="det-c"), "model.safetensors"))
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)

    def test_sharded_equals_single(self):
        one = gen("llama", seed=2, name="shard-1")
        three = gen("llama", seed=2, shards=3, name="shard-3")
        self.assertFalse(os.path.exists(os.path.join(three, "model.safetensors")))
        ids = ids_for(384, 6, 8)
        self.assertTrue(torch.equal(run_ref(one, [{"input_ids": ids}])["hidden.0"],
                                    run_ref(three, [{"input_ids": ids}])["hidden.0"]))


def pixels(n, size, seed):
    return torch.from_numpy(np.random.RandomState(seed).randn(n, 3, size, size).astype(np.float32))


class Clip(unittest.TestCase):
    def test_clip_vision_matches_numpy(self):
        m = gen("clip_vision", with_position_ids=True)
        c = read_config(m)
        W = np_weights(m)
        px = pixels(2, c["image_size"], 0)
        out = run_ref(m, [{"pixel_values": px}])
        for n in range(2):
            hs, pooled = np_clip_vision(c, W, "vision_model.", px[n].double().numpy())
            for l, h in enumerate(hs):
                self.assertLess(np.abs(out[f"clip_hidden.0.{l}"][n].double().numpy() - h).max(), 2e-4, l)
            self.assertLess(np.abs(out["clip_pooled.0"][n].double().numpy() - pooled).max(), 2e-4)
        self.assertTrue(torch.equal(out["clip_last_hidden.0"], out[f"clip_hidden.0.{c['num_hidden_layers']}"]))

    def test_clip_model_both_towers(self):
        m = gen("clip")
        c = read_config(m)
        W = np_weights(m)
        vc, tc = c["vision_config"], c["text_config"]
        px = pixels(1, vc["image_size"], 1)
        ids = [tc["bos_token_id"], 5, 6, 7, tc["eos_token_id"], 9, 2]
        out = run_ref(m, [{"pixel_values": px, "input_ids": ids}])
        _, pooled = np_clip_vision(vc, W, "vision_model.", px[0].double().numpy())
        self.assertLess(np.abs(out["image_embeds.0"][0].double().numpy()
                               - W["visual_projection.weight"] @ pooled).max(), 2e-4)
        x = W["text_model.embeddings.token_embedding.weight"][ids] + \
            W["text_model.embeddings.position_embedding.weight"][:len(ids)]
        hs = np_clip_encoder(tc, W, "text_model.", x, causal=True)
        last = np_ln(hs[-1], W["text_model.final_layer_norm.weight"], W["text_model.final_layer_norm.bias"], 1e-5)
        self.assertLess(np.abs(out["clip_text_last_hidden.0"].double().numpy() - last).max(), 2e-4)
        self.assertLess(np.abs(out["clip_text_pooled.0"].double().numpy() - last[4]).max(), 2e-4)  # first eos
        self.assertLess(np.abs(out["text_embeds.0"].double().numpy()
                               - W["text_projection.weight"] @ last[4]).max(), 2e-4)


class Llava(unittest.TestCase):
    def test_layouts_identical(self):
        legacy = gen("llava", seed=3, layout="legacy", name="llava-legacy")
        new = gen("llava", seed=3, layout="new", name="llava-new")
        kl, kn = st.load_checkpoint_torch(legacy), st.load_checkpoint_torch(new)
        self.assertIn("language_model.model.embed_tokens.weight", kl)
        self.assertIn("language_model.lm_head.weight", kl)
        self.assertIn("vision_tower.vision_model.embeddings.class_embedding", kl)
        self.assertIn("multi_modal_projector.linear_1.weight", kl)
        self.assertIn("model.language_model.embed_tokens.weight", kn)
        self.assertIn("lm_head.weight", kn)
        self.assertIn("model.vision_tower.vision_model.embeddings.class_embedding", kn)
        self.assertIn("model.multi_modal_projector.linear_2.bias", kn)
        self.assertEqual(len(kl), len(kn))
        self.assertIn("image_token_index", read_config(legacy))
        self.assertIn("image_token_id", read_config(new))
        inputs = [{"input_ids": [1, 500, 7, 8], "pixel_values": pixels(1, 32, 2)}, {"input_ids": [4, 5]}]
        a, b = run_ref(legacy, inputs), run_ref(new, inputs)
        self.assertEqual(sorted(a), sorted(b))
        for k in a:
            self.assertTrue(torch.equal(a[k], b[k]), k)

    def test_tied_llava_has_no_head(self):
        for layout in ("legacy", "new"):
            keys = st.load_checkpoint_torch(gen("llava_qwen2", layout=layout))
            self.assertFalse(any(k.endswith("lm_head.weight") for k in keys), layout)

    def test_single_token_expansion_equals_preexpanded(self):
        m = gen("llava")
        px = pixels(2, 32, 3)
        F_ = 16  # (32 / 8)^2 patches, CLS dropped
        short = [1, 500, 7, 500, 9]
        full = [1] + [500] * F_ + [7] + [500] * F_ + [9]
        a = run_ref(m, [{"input_ids": short, "pixel_values": px}])
        b = run_ref(m, [{"input_ids": full, "pixel_values": px}])
        self.assertEqual(a["hidden.0"].shape[0], len(full))
        self.assertTrue(torch.equal(a["hidden.0"], b["hidden.0"]))
        self.assertEqual(a["expanded_ids.0"].tolist(), full)

    def check_llava_numpy(self, m, ids, n_img):
        c = read_config(m)
        vc, tc = c["vision_config"], c["text_config"]
        W = np_weights(m)
        px = pixels(n_img, vc["image_size"], 4)
        out = run_ref(m, [{"input_ids": ids, "pixel_values": px}])
        vfl = c.get("vision_feature_layer", -2)
        layers = vfl if isinstance(vfl, list) else [vfl]
        feats = []
        for n in range(n_img):
            hs, _ = np_clip_vision(vc, W, "vision_tower.vision_model.", px[n].double().numpy())
            sel = np.concatenate([hs[l] for l in layers], axis=-1)
            if c.get("vision_feature_select_strategy", "default") == "default":
                sel = sel[1:]
            h = np_act(c.get("projector_hidden_act", "gelu"),
                       sel @ W["multi_modal_projector.linear_1.weight"].T + W["multi_modal_projector.linear_1.bias"])
            feats.append(h @ W["multi_modal_projector.linear_2.weight"].T + W["multi_modal_projector.linear_2.bias"])
        self.assertLess(np.abs(out["image_features.0"].double().numpy() - np.stack(feats)).max(), 2e-4)
        emb = W["language_model.model.embed_tokens.weight"]
        rows, k = [], 0
        for t in ids:
            if t == c["image_token_index"]:
                rows.extend(feats[k])
                k += 1
            else:
                rows.append(emb[t])
        want = np_decoder(tc, W, "language_model.model.", np.stack(rows))
        self.assertLess(np.abs(out["hidden.0"].double().numpy() - want[-1]).max(), 3e-4)
        return out

    def test_llava_matches_numpy(self):
        self.check_llava_numpy(gen("llava"), [1, 500, 7, 500, 9, 10], 2)

    def test_llava_feature_layer_list(self):
        m = gen("llava", sets=["vision_feature_layer=[-3,-1]"])
        self.assertEqual(st.load_checkpoint_torch(m)["multi_modal_projector.linear_1.weight"].shape[1], 64)
        out = self.check_llava_numpy(m, [1, 500, 7], 1)
        self.assertEqual(list(out["vision_selected.0"].shape), [1, 16, 64])
        self.assertTrue(torch.equal(out["vision_selected.0"][..., :32], out["clip_hidden.0.1"][:, 1:]))

    def test_llava_qwen2_full_strategy(self):
        m = gen("llava_qwen2", layout="new")
        out = self.check_llava_numpy_new(m)
        self.assertEqual(out["image_features.0"].shape[1], 10)  # 9 patches + CLS

    def check_llava_numpy_new(self, m):
        # numpy check reads legacy key names: write a legacy copy of the same weights
        legacy = os.path.join(TMP.name, "lq-legacy")
        os.makedirs(legacy, exist_ok=True)
        W, _ = reference.llava_detect_and_canonicalize(st.load_checkpoint_torch(m), m)
        st.save_torch(W, os.path.join(legacy, "model.safetensors"))
        cfg = read_config(m)
        cfg["image_token_index"] = cfg.pop("image_token_id")
        with open(os.path.join(legacy, "config.json"), "w") as f:
            json.dump(cfg, f)
        a = self.check_llava_numpy(legacy, [1, 440, 7, 9], 1)
        b = run_ref(m, [{"input_ids": [1, 440, 7, 9], "pixel_values": pixels(1, 48, 4)}])
        self.assertTrue(torch.equal(a["hidden.0"], b["hidden.0"]))
        return b

    def test_image_token_mismatch_is_an_error(self):
        m = gen("llava")
        with self.assertRaisesRegex(reference.RefError, r"3 image tokens .* expected 32 .* or 2"):
            run_ref(m, [{"input_ids": [500, 500, 500], "pixel_values": pixels(2, 32, 0)}])
        with self.assertRaisesRegex(reference.RefError, "does not match vision image_size"):
            run_ref(m, [{"input_ids": [500], "pixel_values": pixels(1, 48, 0)}])

    def test_llava_defaults_when_subconfigs_missing(self):
        c = reference.resolve_config({"model_type": "llava"})
        vc, tc = c["vision_config"], c["text_config"]
        self.assertEqual((vc["hidden_size"], vc["patch_size"], vc["image_size"], vc["num_hidden_layers"],
                          vc["hidden_act"]), (1024, 14, 336, 24, "quick_gelu"))
        self.assertEqual((tc["model_type"], tc["hidden_size"], tc["num_key_value_heads"], tc["rms_norm_eps"]),
                         ("llama", 4096, 32, 1e-6))
        self.assertEqual((c["image_token_index"], c["vision_feature_layer"], c["projector_hidden_act"],
                          c["multimodal_projector_bias"]), (32000, -2, "gelu", True))
        c2 = reference.resolve_config({"model_type": "llava", "image_token_index": 5, "image_token_id": 7,
                                       "text_config": {"vocab_size": 10}})
        self.assertEqual(c2["image_token_index"], 7)


class Phi3V(unittest.TestCase):
    """phi3v_ref.py: the HD arrangement by explicit loops, token counts, the rope factor switch."""

    def test_hd_merge_by_loops(self):
        import phi3v_ref
        C, hc, wc = 3, 2, 3
        feats = torch.randn(hc * wc, 24 * 24, C, dtype=torch.float64)
        got = phi3v_ref._merge_2x2(feats, hc, wc)[0]                     # [hc*12, wc*12, 4C]
        for r in range(hc * 12):
            for col in range(wc * 12):
                crop, lr, lc = (r // 12) * wc + col // 12, r % 12, col % 12
                want = torch.cat([feats[crop, (2 * lr + dy) * 24 + 2 * lc + dx] for dy in (0, 1) for dx in (0, 1)])
                self.assertTrue(torch.equal(got[r, col], want), (r, col))
        sep = torch.randn(1, 1, 1, 4 * C, dtype=torch.float64)
        nl = phi3v_ref._newline(got[None], sep)[0]
        self.assertEqual(nl.shape[0], hc * 12 * (wc * 12 + 1))
        self.assertTrue(torch.equal(nl[wc * 12], sep.flatten()))          # after the first row

    def test_features_match_token_count_and_rope_switch(self):
        import phi3v_ref
        d = gen("phi3_v", seed=4)
        c = reference.load_config(d)
        W, _ = reference.load_weights(d, c, torch.float32)
        for h, w in ((336, 1008), (672, 672)):
            n = 1 + (h // 336) * (w // 336)
            f = phi3v_ref.image_features(c, W, torch.randn(n, 3, 336, 336), [[h, w]])
            hc, wc = h // 336, w // 336
            self.assertEqual(f.shape[0], (hc * wc + 1) * 144 + 1 + (hc + 1) * 12)
        cos_s, _ = phi3v_ref.rope_cos_sin(c, torch.arange(64), torch.float32)
        cos_l, _ = phi3v_ref.rope_cos_sin(c, torch.arange(65), torch.float32)
        self.assertGreater((cos_s - cos_l[:64]).abs().max().item(), 1e-3)   # long factors from 65 tokens
        self.assertAlmostEqual(cos_s[0, 0].item(), math.sqrt(2.0), places=6)  # attention factor at position 0


class Cli(unittest.TestCase):
    def test_end_to_end_and_errors(self):
        d = os.path.join(TMP.name, "cli")
        os.makedirs(d, exist_ok=True)
        py = sys.executable
        r = subprocess.run([py, os.path.join(GEN, "tiny_models.py"), "--arch", "llava", "--seed", "2", "--out",
                            os.path.join(d, "m"), "--layout", "new", "--set", "text_config.num_key_value_heads=2"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        pre = read_json(os.path.join(d, "m", "preprocessor_config.json"))
        self.assertEqual((pre["crop_size"], pre["size"], pre["resample"]),
                         ({"height": 32, "width": 32}, {"shortest_edge": 32}, 3))
        st.save_npy(os.path.join(d, "px.npy"), pixels(1, 32, 0).numpy())
        with open(os.path.join(d, "in.json"), "w") as f:
            json.dump([{"input_ids": [1, 500, 3], "pixel_values": "px.npy"}, {"input_ids": [2, 3, 4]}], f)
        r = subprocess.run([py, os.path.join(GEN, "reference.py"), "--model", os.path.join(d, "m"), "--inputs",
                            os.path.join(d, "in.json"), "--output", os.path.join(d, "ref.safetensors")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        ref, meta = st.load(os.path.join(d, "ref.safetensors"))
        self.assertEqual(meta["kind"], "llava")
        self.assertEqual(ref["hidden.0"].shape, (18, 64))
        self.assertEqual(ref["emb.1"].dtype, np.float32)
        self.assertAlmostEqual(float(np.linalg.norm(ref["emb.1"])), 1.0, places=5)
        # bad inputs: one 'error:' line, exit status 1
        with open(os.path.join(d, "bad.json"), "w") as f:
            json.dump([{"input_ids": [1, 999999]}], f)
        for args in (["--inputs", os.path.join(d, "bad.json"), "--output", os.path.join(d, "x.st")],
                     ["--inputs", os.path.join(d, "missing.json"), "--output", os.path.join(d, "x.st")]):
            r = subprocess.run([py, os.path.join(GEN, "reference.py"), "--model", os.path.join(d, "m")] + args,
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertTrue(r.stderr.startswith("error: "), r.stderr)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)

    def test_checkpoint_validation(self):
        m = gen("llama", seed=11, name="llama-broken")
        W = st.load_checkpoint_torch(m)
        W.pop("model.layers.1.mlp.up_proj.weight")
        st.save_torch(W, os.path.join(m, "model.safetensors"))
        with self.assertRaisesRegex(reference.RefError, r"missing tensor 'model.layers.1.mlp.up_proj.weight'"):
            reference.run(m, [{"input_ids": [1]}])
        W["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 3)
        st.save_torch(W, os.path.join(m, "model.safetensors"))
        with self.assertRaisesRegex(reference.RefError, r"has shape \[3, 3\]; expected \[160, 64\]"):
            reference.run(m, [{"input_ids": [1]}])
        with self.assertRaisesRegex(reference.RefError, "rope_type 'yarn' is not supported"):
            reference.resolve_config({"model_type": "llama", "rope_scaling": {"type": "yarn", "factor": 2.0}})


if __name__ == "__main__":
    try:
        result = unittest.main(verbosity=1, exit=False).result
    finally:
        TMP.cleanup()
    sys.exit(0 if result.wasSuccessful() else 1)
