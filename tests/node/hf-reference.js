#!/usr/bin/env node
// Reference ids from the Hugging Face tokenizers library (Rust, via @anush008/tokenizers).
// usage: node hf-reference.js TOKENIZER_JSON IN.json OUT.json
//   IN.json:  {"texts": [str...], "decode": [[id...]...]}
//   OUT.json: {"with_special": [[id...]], "without_special": [[id...]],
//              "decoded": [str...], "decoded_skip": [str...]}
// The C++ tests (tests/test-tokenizer*.cpp) run this to get expected values at test time.
'use strict';
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');

async function main() {
  const [tokPath, inPath, outPath] = process.argv.slice(2);
  if (!tokPath || !inPath || !outPath) {
    console.error('usage: node hf-reference.js TOKENIZER_JSON IN.json OUT.json');
    process.exit(2);
  }
  const tok = Tokenizer.fromFile(tokPath);
  const input = JSON.parse(fs.readFileSync(inPath, 'utf8'));
  const texts = input.texts || [];
  const out = { with_special: [], without_special: [], decoded: [], decoded_skip: [] };
  for (const t of texts) {
    out.with_special.push((await tok.encode(t, null, { addSpecialTokens: true })).getIds());
    out.without_special.push((await tok.encode(t, null, { addSpecialTokens: false })).getIds());
  }
  for (const ids of input.decode || []) {
    out.decoded.push(await tok.decode(ids, false));
    out.decoded_skip.push(await tok.decode(ids, true));
  }
  fs.writeFileSync(outPath, JSON.stringify(out));
}

main().catch((e) => {
  console.error('hf-reference.js: ' + (e && e.message ? e.message : e));
  process.exit(1);
});
