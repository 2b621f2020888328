# Model parity against the independent Python reference (tests/gen), on tiny checkpoints.
unime_test(test-model-parity.cpp LABEL model TORCH)
