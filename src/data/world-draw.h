// src/data/world-draw.h - rasteriser for the procedural world: scene -> small RGB image, object
// crops (for grounding), PNG encoding (stb_image_write).
//
// Geometry (N = image side, cell = N / kGrid): an object sits at its cell centre plus a jitter
// of at most 9% of a cell, with radius 0.40 * cell (large) or 0.26 * cell (small), so it never
// leaves its cell. Pixels are tested at their centres against each shape's implicit definition
// (no anti-aliasing, clean edges). Only +, -, *, / on doubles decide coverage, so renders are
// bit-identical across platforms.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/world-scene.h"

namespace unime::data::world {

/// Row-major RGB, 3 bytes per pixel.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  const uint8_t* at(int x, int y) const { return &rgb[(static_cast<size_t>(y) * width + x) * 3]; }
};

/// Centre (x, y) in pixels and radius of an object drawn at image side n.
struct Footprint {
  double cx = 0, cy = 0, radius = 0;
};
Footprint footprint(const Object& o, int n);

/// True if the point (u, v), in units of the object's radius from its centre, lies inside the
/// shape (u right, v down).
bool shape_covers(int shape, double u, double v);

/// Renders the scene at n x n pixels.
Image render_scene(const Scene& s, int n);

/// The square region around object `o` (its footprint plus a margin), clamped to the image, at its
/// own scale in the centre of a neutral grey n x n canvas: the object lands on the centre patch at
/// the size it has in scenes (a zoomed crop spans patches the vision tower never saw it on).
Image crop_object(const Image& img, const Object& o, int n);

/// PNG bytes (stb_image_write, default compression: deterministic for a given input).
std::vector<uint8_t> encode_png(const Image& img);

}  // namespace unime::data::world
