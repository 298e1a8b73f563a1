// Adam on fp32 weights from bf16 gradients, writing the weights' bf16 copies in the same pass over memory.
//
// The arithmetic is torch's fused CPU Adam (aten/src/ATen/native/cpu/FusedAdamKernel.cpp, its vectorised path) as
// torch's x86 build computes it: the same float operations in the same order, with fused multiply-adds where that
// build contracts them (the weight decay, the first moment's lerp, the second moment; found by comparing with
// torch 2.13's kernel element by element) and the bias corrections in double. A bf16 gradient is exact in fp32, so
// the weights, moments and copies equal those of autocast's casts and torch's kernel, bit for bit
// (tests/test_bf16_weights.py). Built by cxrgan.classify.bf16_weights with torch's extension builder.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

inline float from_bf16(uint16_t bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof value);
  return value;
}

// Round to nearest even, as c10::BFloat16; a NaN stays a quiet NaN.
inline uint16_t to_bf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof word);
  const uint32_t rounded = (word + 0x7fffu + ((word >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((word & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);
}

struct Constants {
  float step_size_neg, beta2, exp_avg_coeff, exp_avg_sq_coeff, bias_correction2_sqrt, eps, weight_decay;
};

template <bool decay>
void update(float* __restrict__ param, const uint16_t* __restrict__ grad, float* __restrict__ exp_avg,
            float* __restrict__ exp_avg_sq, uint16_t* __restrict__ copy, int64_t n, const Constants c) {
  for (int64_t i = 0; i < n; ++i) {
    float g = from_bf16(grad[i]);
    if (decay) g = std::fma(param[i], c.weight_decay, g);
    const float m = std::fma(c.exp_avg_coeff, g - exp_avg[i], exp_avg[i]);
    const float v = std::fma(c.exp_avg_sq_coeff * g, g, exp_avg_sq[i] * c.beta2);
    const float denom = std::sqrt(v) / c.bias_correction2_sqrt + c.eps;
    const float p = param[i] + c.step_size_neg * m / denom;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p;
    copy[i] = to_bf16(p);
  }
}

void check(const at::Tensor& param, const at::Tensor& other, at::ScalarType dtype, const char* what) {
  TORCH_CHECK(other.device().is_cpu() && other.scalar_type() == dtype, what, ": expected a CPU ", dtype, " tensor");
  TORCH_CHECK(other.sizes() == param.sizes() && other.strides() == param.strides(), what,
              ": sizes and strides must equal the weight's");
}

}  // namespace

void adam_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads,
               const std::vector<at::Tensor>& exp_avgs, const std::vector<at::Tensor>& exp_avg_sqs,
               const std::vector<at::Tensor>& copies, const std::vector<double>& steps, double lr, double beta1,
               double beta2, double eps, double weight_decay) {
  const size_t n = params.size();
  TORCH_CHECK(grads.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n && copies.size() == n &&
              steps.size() == n, "adam_step: one gradient, moment pair, copy and step per weight");
  for (size_t t = 0; t < n; ++t) {
    const at::Tensor& param = params[t];
    TORCH_CHECK(param.device().is_cpu() && param.scalar_type() == at::kFloat && param.is_non_overlapping_and_dense(),
                "adam_step: weights must be dense fp32 CPU tensors");
    check(param, grads[t], at::kBFloat16, "gradient");
    check(param, exp_avgs[t], at::kFloat, "exp_avg");
    check(param, exp_avg_sqs[t], at::kFloat, "exp_avg_sq");
    check(param, copies[t], at::kBFloat16, "bf16 copy");
    const double bias_correction1 = 1 - std::pow(beta1, steps[t]);
    const double bias_correction2 = 1 - std::pow(beta2, steps[t]);
    const Constants c{static_cast<float>(-(lr / bias_correction1)), static_cast<float>(beta2),
                      static_cast<float>(1 - beta1), static_cast<float>(1 - beta2),
                      static_cast<float>(std::sqrt(bias_correction2)), static_cast<float>(eps),
                      static_cast<float>(weight_decay)};
    float* p = param.data_ptr<float>();
    const uint16_t* g = reinterpret_cast<const uint16_t*>(grads[t].data_ptr<at::BFloat16>());
    float* m = exp_avgs[t].data_ptr<float>();
    float* v = exp_avg_sqs[t].data_ptr<float>();
    uint16_t* copy = reinterpret_cast<uint16_t*>(copies[t].data_ptr<at::BFloat16>());
    const bool decay = weight_decay != 0;
    at::parallel_for(0, param.numel(), 16384, [=](int64_t begin, int64_t end) {
      if (decay) {
        update<true>(p + begin, g + begin, m + begin, v + begin, copy + begin, end - begin, c);
      } else {
        update<false>(p + begin, g + begin, m + begin, v + begin, copy + begin, end - begin, c);
      }
    });
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("adam_step", &adam_step, "Adam on fp32 weights from bf16 gradients, writing their bf16 copies");
}
