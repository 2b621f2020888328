// Phi-3-V HD feature transform; see vision-phi3v.h.
#include "models/vision-phi3v.h"

#include <cmath>

namespace unime::models {

namespace F = torch::nn::functional;

Phi3VImageEmbedImpl::Phi3VImageEmbedImpl(int64_t clip_hidden, int64_t hidden) {
  const int64_t C4 = 4 * clip_hidden;
  glb_GN = register_parameter("glb_GN", torch::zeros({1, 1, C4}));
  sub_GN = register_parameter("sub_GN", torch::zeros({1, 1, 1, C4}));
  // nn.Sequential(Linear, GELU, Linear): children "0" and "2" hold the weights
  auto seq = register_module("img_projection", std::make_shared<torch::nn::Module>());
  proj_0 = seq->register_module("0", Linear(C4, hidden, true));
  proj_2 = seq->register_module("2", Linear(hidden, hidden, true));
}

int64_t phi3v_feature_tokens(int64_t hd_height, int64_t hd_width, int64_t crop, int64_t m) {
  const int64_t hc = hd_height / crop, wc = hd_width / crop;
  return (hc * wc + 1) * m * m + 1 + (hc + 1) * m;
}

torch::Tensor Phi3VImageEmbedImpl::forward(const torch::Tensor& feats, const torch::Tensor& hd_sizes,
                                           int64_t crop) {
  const int64_t n = feats.size(0), P = feats.size(1), C = feats.size(2);
  const int64_t g = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(P))));
  TORCH_CHECK(g * g == P && g % 2 == 0, "Phi3VImageEmbed: ", P, " patches are not an even square grid");
  const int64_t m = g / 2, C4 = 4 * C;
  // reshape_hd_patches_2x2merge, per crop: [n, g, g, C] -> [n, m, 2, m, 2, C] -> [n, m, m, 2, 2, C]
  auto merged = feats.reshape({n, m, 2, m, 2, C}).permute({0, 1, 3, 2, 4, 5}).reshape({n, m, m, C4});
  auto sizes = hd_sizes.to(torch::kCPU, torch::kInt64).contiguous();
  const auto dtype = proj_0->weight.defined() ? proj_0->weight.scalar_type() : merged.scalar_type();
  auto sub_nl = sub_GN.to(merged.scalar_type()).view({1, 1, C4});
  // add_image_newline: [rows, cols, 4C] -> [rows * (cols + 1), 4C]
  auto with_newline = [&](const torch::Tensor& grid) {
    return torch::cat({grid, sub_nl.expand({grid.size(0), 1, C4})}, 1).reshape({-1, C4});
  };
  std::vector<torch::Tensor> parts;
  int64_t off = 0;
  for (int64_t i = 0; i < sizes.size(0); ++i) {
    const int64_t hc = sizes[i][0].item<int64_t>() / crop, wc = sizes[i][1].item<int64_t>() / crop;
    TORCH_CHECK(hc > 0 && wc > 0 && off + 1 + hc * wc <= n, "Phi3VImageEmbed: image ", i, " of HD size ",
                sizes[i][0].item<int64_t>(), "x", sizes[i][1].item<int64_t>(), " needs ", 1 + hc * wc,
                " crops; ", n - off, " left");
    auto sub = merged.narrow(0, off + 1, hc * wc)
                   .view({hc, wc, m, m, C4})
                   .permute({0, 2, 1, 3, 4})                       // [hc, m, wc, m, 4C]
                   .reshape({hc * m, wc * m, C4});
    parts.push_back(with_newline(sub));                             // [hc*m*(wc*m+1), 4C]
    parts.push_back(glb_GN.to(merged.scalar_type()).view({1, C4}));
    parts.push_back(with_newline(merged[off]));                    // global crop [m*(m+1), 4C]
    off += 1 + hc * wc;
  }
  TORCH_CHECK(off == n, "Phi3VImageEmbed: ", n, " crops for images that need ", off);
  auto x = torch::cat(parts, 0).to(dtype);                          // [sum F_i, 4C]
  return proj_2(F::gelu(proj_0(x)));                                // [sum F_i, D]
}

}  // namespace unime::models
