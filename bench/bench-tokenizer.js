#!/usr/bin/env node
// HF side of bench-tokenizer: times the Rust tokenizers library (Node binding) on a batch.
// usage: node bench/bench-tokenizer.js TOKENIZER_JSON TEXTS.json REPEATS
// prints one JSON line: {"best_s": ..., "tokens": ...}
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, '..', 'tests', 'node', 'node_modules',
                                        '@anush008', 'tokenizers'));

async function main() {
  const [tokPath, textsPath, repeatsArg] = process.argv.slice(2);
  const tok = Tokenizer.fromFile(tokPath);
  const texts = JSON.parse(fs.readFileSync(textsPath, 'utf8'));
  const repeats = Number(repeatsArg || 3);
  await tok.encodeBatch(texts.slice(0, 100), { addSpecialTokens: true });  // warm-up
  let best = Infinity, tokens = 0;
  for (let r = 0; r < repeats; ++r) {
    const t0 = process.hrtime.bigint();
    const encs = await tok.encodeBatch(texts, { addSpecialTokens: true });
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.min(best, s);
    tokens = encs.reduce((n, e) => n + e.getLength(), 0);
  }
  console.log(JSON.stringify({ best_s: best, tokens }));
}
main().catch((e) => { console.error(String(e)); process.exit(1); });
