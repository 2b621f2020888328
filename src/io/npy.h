// NumPy .npy files (format 1.0 / 2.0 / 3.0, little- or big-endian floats, C order), for pixel
// tensors and reference dumps exchanged with Python.
// Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//   "\x93NUMPY" major minor, header length (u16 LE for 1.0, u32 LE for 2.0/3.0), then a Python
//   dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 336, 336), } padded
//   with spaces and '\n' so that the data starts at a multiple of 64 bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace unime::io {

/// Writes float32 data of `shape` (C order) as .npy, atomically. Empty shape = a scalar.
void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

/// The bytes write_npy_f32 would write (header + data).
std::string encode_npy_f32(const float* data, const std::vector<int64_t>& shape);

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // C order
};

/// Reads a .npy of f2/f4/f8 (either byte order) into float32. Fortran order, other dtypes,
/// truncated data or a malformed header -> unime::Error naming the file.
NpyArray read_npy_f32(const std::string& path);
/// As read_npy_f32 on bytes in memory; `name` is used in error messages.
NpyArray parse_npy_f32(const uint8_t* data, size_t size, const std::string& name);

}  // namespace unime::io
