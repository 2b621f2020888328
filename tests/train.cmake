# Training math (src/train): losses, LoRA / QLoRA adapters and `unime merge`, GradCache.
unime_test(test-loss-contrastive.cpp LABEL unit TORCH)
unime_test(test-loss-distill.cpp LABEL unit TORCH)
unime_test(test-lora.cpp LABEL model TORCH)
unime_test(test-grad-cache.cpp LABEL model TORCH)
unime_test(test-pretrain.cpp LABEL model)
