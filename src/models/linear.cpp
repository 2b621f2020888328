// models::Linear; see linear.h. Reference for the LoRA path: peft/tuners/lora/layer.py (Linear.forward).
#include "models/linear.h"

namespace unime::models {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  // torch::nn::Linear's initialisation (Kaiming-uniform, a = sqrt(5)); checkpoints overwrite it
  weight = register_parameter("weight", torch::empty({out, in}));
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
    bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
  }
}

torch::Tensor LinearImpl::dense_weight() const { return weight; }

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  auto y = torch::nn::functional::linear(x, weight, bias);
  if (!has_lora()) return y;
  auto h = x;
  if (lora_dropout > 0 && is_training()) h = torch::dropout(h, lora_dropout, /*train=*/true);
  auto l = torch::nn::functional::linear(torch::nn::functional::linear(h.to(lora_A.scalar_type()), lora_A), lora_B);
  return y + (l * lora_scaling).to(y.scalar_type());
}

}  // namespace unime::models
