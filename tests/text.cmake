# Tokenizer tests (src/text/tokenizer*): expected ids come from the Hugging Face tokenizers
# library (tests/node, installed by scripts/install-deps.sh) at test time.
unime_test(test-tokenizer-unit.cpp LABEL unit)
unime_test(test-tokenizer-hf.cpp LABEL model TIMEOUT 900)
unime_test(test-bpe-train.cpp LABEL unit)
