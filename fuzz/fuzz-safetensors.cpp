// libFuzzer target for the safetensors header parser: any bytes are a candidate file; the
// parser must either accept them (and then every tensor lies inside the buffer) or throw
// unime::Error. Build: `make fuzz`; run: build-fuzz/bin/fuzz-safetensors corpus/ -max_len=4096
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto h = unime::io::parse_safetensors_header(data, size, "fuzz.safetensors");
    size_t covered = 0;
    for (const auto& [name, t] : h.tensors) {
      // invariants the parser promises: data inside the buffer, byte count = shape x dtype
      if (t.data < data + h.data_offset || t.data + t.nbytes > data + size) std::abort();
      if (static_cast<size_t>(t.numel()) * unime::io::dtype_size(t.dtype) != t.nbytes) std::abort();
      covered += t.nbytes;
    }
    if (covered != size - h.data_offset) std::abort();
  } catch (const unime::Error&) {
  }
  return 0;
}
