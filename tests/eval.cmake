# Evaluators: metrics, readers, cache and reports on hand-made data (no model).
unime_test(test-eval-metrics.cpp LABEL unit)
# End to end on a generated world + random tiny LLaVA-Qwen2: scores vs numpy over `unime embed`.
unime_test(test-eval-cli.cpp LABEL model)
