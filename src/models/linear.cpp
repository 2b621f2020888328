// models::Linear; see linear.h. References: peft/tuners/lora/layer.py (Linear.forward, merge,
// get_delta_weight), bitsandbytes/functional.py (get_4bit_type "nf4", create_dynamic_map,
// quantize_4bit / dequantize_4bit with compress_statistics), csrc/kernels.cu (dQuantizeNF4).
#include "models/linear.h"

#include <algorithm>
#include <cmath>

#include <torch/version.h>

#include "io/fs.h"

namespace unime::models {

// ---- NF4 tables ----------------------------------------------------------------------------------

const std::vector<double>& nf4_levels() {
  static const std::vector<double> kLevels = {
      -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
      -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
      0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
      0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};
  return kLevels;
}

const std::vector<double>& dynamic_map_8bit() {
  // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for exponent i = 0..6,
  // 2^i fraction values = midpoints of linspace(0.1, 1, 2^i + 1), scaled by 10^(i-6), both signs;
  // plus 0 and 1.0: 2 * 127 + 2 = 256 values (values rounded to float32 as torch computes them).
  static const std::vector<double> kMap = [] {
    std::vector<double> data;
    for (int i = 0; i < 7; ++i) {
      const int n = (1 << i) + 1;  // fraction_items
      for (int k = 0; k + 1 < n; ++k) {
        const double b0 = 0.1 + 0.9 * k / (n - 1), b1 = 0.1 + 0.9 * (k + 1) / (n - 1);
        const double v = static_cast<float>(std::pow(10.0, i - 6) * static_cast<float>((b0 + b1) / 2));
        data.push_back(v);
        data.push_back(-v);
      }
    }
    data.push_back(0.0);
    data.push_back(1.0);
    std::sort(data.begin(), data.end());
    return data;
  }();
  return kMap;
}

int64_t Nf4Tensor::nbytes() const {
  int64_t n = 0;
  for (const auto* t : {&codes, &absmax, &absmax_q, &absmax2})
    if (t->defined()) n += t->numel() * static_cast<int64_t>(t->element_size());
  return n;
}

// ---- NF4 quantisation ----------------------------------------------------------------------------

namespace {

/// Midpoints between consecutive ascending levels: [n-1] float32 on `device`.
torch::Tensor midpoints(const std::vector<double>& levels, torch::Device device) {
  std::vector<float> mids;
  for (size_t i = 0; i + 1 < levels.size(); ++i)
    mids.push_back(static_cast<float>((levels[i] + levels[i + 1]) / 2));
  return torch::tensor(mids, torch::kFloat32).to(device);
}

torch::Tensor table(const std::vector<double>& levels, torch::Device device) {
  std::vector<float> v(levels.begin(), levels.end());
  return torch::tensor(v, torch::kFloat32).to(device);
}

/// bucketize(x, midpoints(levels), right=false) for a float32 CPU tensor and at most 16 levels:
/// the number of midpoints strictly below each value (NaN: 0, as bucketize's lower_bound gives),
/// counted with branch-free comparisons in parallel - 10x faster here than torch's binary search,
/// which dominated quantising a model at load. -> [numel] uint8
torch::Tensor count_below_cpu(const torch::Tensor& x, const std::vector<double>& levels) {
  float mids[16];
  const int m = static_cast<int>(levels.size()) - 1;
  for (int i = 0; i < m; ++i) mids[i] = static_cast<float>((levels[i] + levels[i + 1]) / 2);
  auto xc = x.contiguous();
  auto out = torch::empty({xc.numel()}, torch::TensorOptions().dtype(torch::kUInt8));
  const float* src = xc.data_ptr<float>();
  uint8_t* dst = out.data_ptr<uint8_t>();
  at::parallel_for(0, xc.numel(), 1 << 16, [&](int64_t lo, int64_t hi) {
    std::fill(dst + lo, dst + hi, uint8_t(0));
    for (int k = 0; k < m; ++k) {  // one midpoint at a time over the range: vectorises
      const float mk = mids[k];
      for (int64_t i = lo; i < hi; ++i) dst[i] += src[i] > mk;
    }
  });
  return out;
}

/// Blockwise absmax quantisation of flat float32 x onto ascending `levels` (nearest, ties to the
/// lower level). Returns (indices [nb * block] int64, or uint8 on the CPU, absmax [nb] float32).
std::pair<torch::Tensor, torch::Tensor> quantize_blocks(const torch::Tensor& x, int64_t block,
                                                        const std::vector<double>& levels) {
  const int64_t n = x.numel(), nb = (n + block - 1) / block;
  auto flat = x.reshape({-1});
  if (nb * block != n) flat = torch::cat({flat, torch::zeros({nb * block - n}, flat.options())});
  auto blocks = flat.view({nb, block});                        // [nb, block]
  auto absmax = blocks.abs().amax(1);                          // [nb]
  auto denom = torch::where(absmax > 0, absmax, torch::ones_like(absmax));
  auto normed = (blocks / denom.unsqueeze(1)).clamp(-1.0, 1.0);
  // bucketize(right=false) puts x == midpoint into the lower bucket, like dQuantizeNF4's `x > mid`
  if (normed.device().is_cpu() && levels.size() <= 16) return {count_below_cpu(normed, levels), absmax};
  auto idx = torch::bucketize(normed, midpoints(levels, x.device()), /*out_int32=*/false,
                              /*right=*/false);                 // [nb, block] in [0, levels)
  return {idx.reshape({-1}), absmax};
}

/// Dense float32 [numel] from the parts of an Nf4Tensor.
torch::Tensor dequantize_flat(const torch::Tensor& codes, const torch::Tensor& absmax,
                              const torch::Tensor& absmax_q, const torch::Tensor& absmax2,
                              double offset, int64_t block, int64_t numel) {
  const auto dev = codes.device();
  const int64_t nb = codes.numel() * 2 / block;
  torch::Tensor scale;
  if (absmax_q.defined() && absmax_q.numel() > 0) {
    auto a = table(dynamic_map_8bit(), dev).index_select(0, absmax_q.to(torch::kLong));  // [nb]
    auto s2 = absmax2.to(torch::kFloat32).repeat_interleave(kNf4DoubleQuantBlock).narrow(0, 0, nb);
    scale = a * s2 + offset;
  } else {
    scale = absmax.to(torch::kFloat32);
  }
  if (dev.is_cpu()) {  // the same float32 products in one pass (the torch ops below take 5x longer)
    static const std::vector<float> kLv(nf4_levels().begin(), nf4_levels().end());
    auto sc = scale.contiguous();
    auto cc = codes.contiguous();
    auto out = torch::empty({nb * block}, torch::kFloat32);
    const float* s = sc.data_ptr<float>();
    const uint8_t* c = cc.data_ptr<uint8_t>();
    float* o = out.data_ptr<float>();
    const float* lv = kLv.data();
    at::parallel_for(0, nb, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        const float f = s[b];
        const uint8_t* cb = c + b * block / 2;
        float* ob = o + b * block;
        for (int64_t j = 0; j < block / 2; ++j) {
          ob[2 * j] = lv[cb[j] >> 4] * f;
          ob[2 * j + 1] = lv[cb[j] & 15] * f;
        }
      }
    });
    return out.narrow(0, 0, numel);
  }
  auto hi = codes.bitwise_right_shift(4), lo = codes.bitwise_and(15);
  auto idx = torch::stack({hi, lo}, 1).reshape({-1}).to(torch::kLong);  // [nb * block]
  auto vals = table(nf4_levels(), dev).index_select(0, idx);
  return (vals.view({nb, block}) * scale.unsqueeze(1)).reshape({-1}).narrow(0, 0, numel);
}

}  // namespace

Nf4Tensor quantize_nf4(const torch::Tensor& w, int64_t block, bool double_quant) {
  TORCH_CHECK(block > 0 && block % 2 == 0, "quantize_nf4: block must be even, got ", block);
  TORCH_CHECK(w.is_floating_point() && w.numel() > 0, "quantize_nf4: need a non-empty float tensor");
  torch::NoGradGuard ng;
  Nf4Tensor q;
  q.shape.assign(w.sizes().begin(), w.sizes().end());
  q.dtype = w.scalar_type();
  q.block = block;
  // In chunks of whole blocks (each block is quantised on its own, so the result is the same):
  // the temporaries (a float32 copy, int64 indices: ~40 bytes per value) stay at ~40 MB however
  // large the weight. Quantising a whole 7B model at load otherwise leaves gigabytes of freed
  // temporaries in a heap that glibc, set not to mmap (core/runtime.cpp), never gives back.
  const int64_t n = w.numel(), nb = (n + block - 1) / block;
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 20) / block);  // blocks per chunk
  auto flat = w.detach().reshape({-1});
  q.codes = torch::empty({nb * block / 2}, w.options().dtype(torch::kUInt8));
  auto absmax = torch::empty({nb}, w.options().dtype(torch::kFloat32));
  for (int64_t b0 = 0; b0 < nb; b0 += chunk) {
    const int64_t cb = std::min(chunk, nb - b0), e0 = b0 * block, e1 = std::min(n, (b0 + cb) * block);
    auto [idx, am] = quantize_blocks(flat.narrow(0, e0, e1 - e0).to(torch::kFloat32), block, nf4_levels());
    auto pairs = idx.view({-1, 2});                            // [cb * block / 2, 2]
    q.codes.narrow(0, e0 / 2, cb * block / 2).copy_((pairs.select(1, 0) * 16 + pairs.select(1, 1)).to(torch::kUInt8));
    absmax.narrow(0, b0, cb).copy_(am);
  }
  if (!double_quant) {
    q.absmax = absmax.contiguous();
    return q;
  }
  // compress_statistics: absmax - mean, blockwise (256) onto the signed dynamic map
  q.absmax_offset = absmax.mean().item<double>();
  auto centred = absmax - q.absmax_offset;
  auto [idx2, absmax2] = quantize_blocks(centred, kNf4DoubleQuantBlock, dynamic_map_8bit());
  q.absmax_q = idx2.narrow(0, 0, absmax.numel()).to(torch::kUInt8).contiguous();
  q.absmax2 = absmax2.contiguous();
  return q;
}

torch::Tensor dequantize_nf4(const Nf4Tensor& q) {
  int64_t numel = 1;
  for (int64_t s : q.shape) numel *= s;
  torch::NoGradGuard ng;
  return dequantize_flat(q.codes, q.absmax, q.absmax_q, q.absmax2, q.absmax_offset, q.block, numel)
      .view(q.shape)
      .to(q.dtype);
}

// ---- x W^T with W rebuilt from NF4 in forward and backward ----------------------------------------

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Nf4MatmulFn : public torch::autograd::Function<Nf4MatmulFn> {
  // x: [..., I]; codes, absmax, absmax_q, absmax2: the NF4 parts (empty tensors where absent)
  // -> x W^T [..., O]. Only the 4-bit parts are saved; backward dequantises again.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& codes,
                               const torch::Tensor& absmax, const torch::Tensor& absmax_q,
                               const torch::Tensor& absmax2, double offset, int64_t block,
                               int64_t out_features, int64_t in_features) {
    ctx->save_for_backward({codes, absmax, absmax_q, absmax2});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["block"] = block;
    ctx->saved_data["out"] = out_features;
    ctx->saved_data["in"] = in_features;
    torch::Tensor w;
    {
      torch::NoGradGuard ng;
      w = dequantize_flat(codes, absmax, absmax_q, absmax2, offset, block, out_features * in_features)
              .view({out_features, in_features})
              .to(x.scalar_type());                            // [O, I]
    }
    return torch::matmul(x, w.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const int64_t O = ctx->saved_data["out"].toInt(), I = ctx->saved_data["in"].toInt();
    const auto& g = grad_out[0];                               // [..., O]
    auto w = dequantize_flat(saved[0], saved[1], saved[2], saved[3],
                             ctx->saved_data["offset"].toDouble(), ctx->saved_data["block"].toInt(),
                             O * I)
                 .view({O, I})
                 .to(g.scalar_type());
    // d(x W^T)/dx = g W; the base weight is frozen, the storage gets no gradient
    return {torch::matmul(g, w), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor or_empty(const torch::Tensor& t, const torch::Tensor& like) {
  return t.defined() ? t : torch::empty({0}, like.options());
}

}  // namespace

// ---- construction without initialisation ----------------------------------------------------------

namespace {
thread_local std::optional<torch::ScalarType> t_skip_init;
}

SkipInitGuard::SkipInitGuard(torch::ScalarType dtype) : prev_(t_skip_init) { t_skip_init = dtype; }
SkipInitGuard::~SkipInitGuard() { t_skip_init = prev_; }
std::optional<torch::ScalarType> skip_init_dtype() { return t_skip_init; }

// ---- the layer -----------------------------------------------------------------------------------

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  if (auto dt = skip_init_dtype()) {  // Model::load: the checkpoint provides every value
    weight = register_parameter("weight", torch::empty({out, in}, torch::TensorOptions().dtype(*dt)));
    if (with_bias) bias = register_parameter("bias", torch::empty({out}, torch::TensorOptions().dtype(*dt)));
    return;
  }
  // torch::nn::Linear's initialisation (Kaiming-uniform, a = sqrt(5)); checkpoints overwrite it
  weight = register_parameter("weight", torch::empty({out, in}));
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
    bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
  }
}

torch::Tensor LinearImpl::dense_weight() const {
  return is_quantized() ? dequantize_nf4(nf4_) : weight;
}

// libtorch 1.13's bf16 matmul on the CPU (oneDNN 2.6, AMX) is up to 10x slower for some row
// counts: x [610, 1536] W^T [1536, 8960] takes 339 ms, [640, 1536] 34 ms; 561 and 612 rows 3x.
// Multiples of 64 rows run at speed (bench/bench-rows). So on the CPU in bf16 an input of M > 64
// rows is padded with zero rows to a multiple of 64 and the result cut back (measured over 141 row
// counts from 66 to 1300 against two products of 64 * floor(M / 64) and M mod 64 rows: padding
// averages 1.14x the best of the three, the split 1.28x, the plain product 1.77x with a worst of
// 11.7x). Rows are independent: only oneDNN's blocking, and with it the last bf16 rounding, can
// differ from the unpadded product.
template <class F>  // F: const torch::Tensor& -> torch::Tensor (no std::function: this is per layer call)
static torch::Tensor rows_to_fast_count(const torch::Tensor& x, int64_t in_features, const F& f) {
#if TORCH_VERSION_MAJOR < 2
  if (x.device().is_cpu() && x.scalar_type() == torch::kBFloat16 && x.numel() > 0) {
    const int64_t M = x.numel() / in_features;
    if (M > kFastRows && M % kFastRows != 0) {
      const int64_t P = (M + kFastRows - 1) / kFastRows * kFastRows;
      auto x2 = torch::cat({x.reshape({M, in_features}), torch::zeros({P - M, in_features}, x.options())});
      auto y = f(x2).narrow(0, 0, M);
      auto sizes = x.sizes().vec();
      sizes.back() = y.size(1);
      return y.view(sizes);
    }
  }
#endif
  return f(x);
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return rows_to_fast_count(x, w.size(1), [&](const torch::Tensor& in) { return torch::nn::functional::linear(in, w, b); });
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = rows_to_fast_count(x, in_features, [&](const torch::Tensor& in) {
    if (!is_quantized()) return torch::nn::functional::linear(in, weight, bias);
    auto out = Nf4MatmulFn::apply(in, nf4_.codes, or_empty(nf4_.absmax, in), or_empty(nf4_.absmax_q, nf4_.codes),
                                  or_empty(nf4_.absmax2, in), nf4_.absmax_offset, nf4_.block, out_features,
                                  in_features);
    return bias.defined() ? out + bias : out;
  });
  if (!has_lora()) return y;
  // PEFT: x cast to the adapter dtype, dropout, B(A(x)) * scaling added in the promoted dtype
  auto h = x.to(lora_A.scalar_type());
  if (lora_dropout > 0 && is_training()) h = torch::dropout(h, lora_dropout, /*train=*/true);
  auto l = torch::nn::functional::linear(torch::nn::functional::linear(h, lora_A), lora_B);  // [..., O]
  return (y + l * lora_scaling).to(y.scalar_type());
}

void LinearImpl::attach_lora(torch::Tensor A, torch::Tensor B, double scaling, double dropout) {
  TORCH_CHECK(!has_lora(), "attach_lora: an adapter is already attached");
  TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && A.size(1) == in_features && B.size(0) == out_features &&
                  A.size(0) == B.size(1),
              "attach_lora: expected A [r, ", in_features, "] and B [", out_features, ", r], got ",
              A.sizes(), " and ", B.sizes());
  lora_A = register_module("lora_A", LoraWeight(std::move(A)))->weight;
  lora_B = register_module("lora_B", LoraWeight(std::move(B)))->weight;
  lora_scaling = scaling;
  lora_dropout = dropout;
}

void LinearImpl::detach_lora() {
  if (!has_lora()) return;
  unregister_module("lora_A");
  unregister_module("lora_B");
  lora_A = torch::Tensor();
  lora_B = torch::Tensor();
  lora_scaling = 0.0;
  lora_dropout = 0.0;
}

void LinearImpl::merge_lora() {
  TORCH_CHECK(has_lora(), "merge_lora: no adapter attached");
  TORCH_CHECK(!is_quantized(), "merge_lora: the base weight is NF4; merge into a dense base");
  torch::NoGradGuard ng;
  auto A = lora_A.detach(), B = lora_B.detach();
  // get_delta_weight: fp16/bf16 adapters on CPU are multiplied in float32, then cast back
  const auto adt = B.scalar_type();
  const bool up = B.device().is_cpu() && (adt == torch::kBFloat16 || adt == torch::kHalf);
  if (up) A = A.to(torch::kFloat32), B = B.to(torch::kFloat32);
  auto delta = torch::matmul(B, A) * lora_scaling;            // [O, I]
  if (up) delta = delta.to(adt);
  weight.add_(delta.to(weight.device()));                      // `weight.data += delta`
  detach_lora();
}

void LinearImpl::quantize_nf4(bool double_quant, int64_t block) {
  TORCH_CHECK(!is_quantized(), "quantize_nf4: already quantised");
  nf4_ = models::quantize_nf4(weight, block, double_quant);
  const void* dense = weight.data_ptr();
  const size_t dense_bytes = weight.nbytes();
  const bool cpu = weight.device().is_cpu();
  parameters_.erase("weight");
  weight = torch::Tensor();
  // a weight viewing a mapped checkpoint: its pages were read once and are not needed again
  // (a no-op for an owned tensor, or when the storage and its mapping are already gone)
  if (cpu) io::release_mapped_pages(dense, dense_bytes);
  register_buffer("weight_nf4", nf4_.codes);
  if (double_quant) {
    register_buffer("weight_absmax_q", nf4_.absmax_q);
    register_buffer("weight_absmax2", nf4_.absmax2);
  } else {
    register_buffer("weight_absmax", nf4_.absmax);
  }
}

}  // namespace unime::models
