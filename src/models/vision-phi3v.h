// Phi-3-V image embedding after the CLIP tower: the HD transform of Phi3ImageEmbedding
// (microsoft/Phi-3.5-vision-instruct image_embedding_phi3_v.py: hd_feature_transform,
// reshape_hd_patches_2x2merge, add_image_newline, img_projection). Per image, with the processor's
// HD size (h, w) = (hc * S, wc * S):
//   CLIP hidden state at layer_idx, CLS dropped: [1 + hc*wc, g*g, C] (global crop first)
//   -> 2x2 patch merge to [.., m, m, 4C] (m = g / 2; channel order (row offset, col offset, C))
//   -> sub crops tiled to a [hc*m, wc*m, 4C] grid, sub_GN appended to each row
//   -> [sub rows, glb_GN, global m x (m + 1) with sub_GN per row] -> Linear, GELU, Linear -> [F, D]
// F = hc*wc*m^2 + hc*m + 1 + m*(m + 1) = (hc*wc + 1)*m^2 + 1 + (hc + 1)*m (the processor's count).
// Parameters under `model.vision_embed_tokens.`: glb_GN [1, 1, 4C], sub_GN [1, 1, 1, 4C],
// img_projection.0.{weight,bias} [D, 4C], img_projection.2.{weight,bias} [D, D].
// Legend: S crop side (vision image_size), p patch, g = S / p, C CLIP hidden, D decoder hidden.
#pragma once

#include "models/layers.h"

namespace unime::models {

class Phi3VImageEmbedImpl : public torch::nn::Module {
 public:
  Phi3VImageEmbedImpl(int64_t clip_hidden, int64_t hidden);

  /// feats: [sum crops, g*g, C] patch features of every image's crops in order (global, then the
  /// hc x wc sub crops row-major); hd_sizes: [N, 2] int64 (h, w), multiples of S.
  /// -> [sum F_i, D]
  torch::Tensor forward(const torch::Tensor& feats, const torch::Tensor& hd_sizes, int64_t crop);

  torch::Tensor glb_GN;  // [1, 1, 4C]    separator between the sub-crop grid and the global image
  torch::Tensor sub_GN;  // [1, 1, 1, 4C] "newline" after each row of merged patches
  Linear proj_0{nullptr}, proj_2{nullptr};  // img_projection.0 / img_projection.2 (GELU between)
};
TORCH_MODULE(Phi3VImageEmbed);

/// Feature tokens of one image of HD size (h, w) for crop side S and merged grid m:
/// (hc*wc + 1)*m^2 + 1 + (hc + 1)*m.
int64_t phi3v_feature_tokens(int64_t hd_height, int64_t hd_width, int64_t crop, int64_t merged_grid);

}  // namespace unime::models
