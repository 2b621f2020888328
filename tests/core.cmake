# Config parsing and prompt templates (no torch, no files).
unime_test(test-hf-config.cpp LABEL unit)
unime_test(test-prompt.cpp LABEL unit)
# Bad input through the real binary: one error line, exit 1, never a crash.
unime_test(test-cli-errors.cpp LABEL model)
