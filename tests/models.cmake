# Model parity against the independent Python reference (tests/gen), on tiny checkpoints.
unime_test(test-model-parity.cpp LABEL model TORCH)
# End to end: unime embed vs HF tokenizers (node) + Pillow processor + plain-torch reference.
unime_test(test-embed-e2e.cpp LABEL model)
# LLaVA-NeXT: AnyRes forward (both key layouts), batch == single, processor pixels + token counts.
unime_test(test-llava-next.cpp LABEL model TORCH)
# Qwen2-VL: vision transformer + M-RoPE forward (both key layouts), processor, unime embed end to end.
unime_test(test-qwen2vl.cpp LABEL model TORCH)
# LLaVA-NeXT and Qwen2-VL through train instruct (QLoRA + GradCache), embed --lora, eval mmeb --lora:
# 427 s alone on this machine (2 cores), past the default 600 s when anything else runs beside it.
unime_test(test-vlm-train.cpp LABEL model TIMEOUT 1500)
# Phi-3-V: Phi-3 decoder (fused projections, su rope switch), HD image embedding, processor, embed e2e, vision LoRA.
unime_test(test-phi3v.cpp LABEL model TORCH)
# Model::load maps bf16 weights without a copy (copy-on-write), f32 converts; streamed + sharded random checkpoints.
unime_test(test-model-load.cpp LABEL model TORCH)
