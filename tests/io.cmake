# io/ and vision/ preprocessing: safetensors, .npy, image decoding, the CLIP image processor.
# References come from Python run at test time (tests/gen/pil_ref.py: Pillow + numpy).
unime_test(test-safetensors.cpp LABEL model)
unime_test(test-npy.cpp LABEL model)
unime_test(test-image.cpp LABEL model)
unime_test(test-clip-processor.cpp LABEL model)
