// Stage 1 distillation loss; see loss-distill.h. Reference: torch.nn.functional.kl_div with
// log-probability input and reduction "batchmean" (sum over all entries / n).
#include "train/loss-distill.h"

#include "core/error.h"

namespace unime::train {

KlDirection parse_kl_direction(const std::string& s) {
  if (s == "teacher-student") return KlDirection::TeacherStudent;
  if (s == "student-teacher") return KlDirection::StudentTeacher;
  throw Error(str("--kl-direction: unknown value '", s,
                  "'; expected teacher-student (KL(P_t || P_s), default) or student-teacher"));
}

torch::Tensor loss_distill(const torch::Tensor& student, const torch::Tensor& teacher, double tau,
                           KlDirection direction) {
  TORCH_CHECK(student.dim() == 2 && teacher.dim() == 2, "loss_distill: expected [n, D] inputs, got ",
              student.sizes(), " and ", teacher.sizes());
  UNIME_CHECK(student.size(0) == teacher.size(0), "distillation loss: ", student.size(0),
              " student embeddings but ", teacher.size(0), " teacher embeddings in the batch");
  UNIME_CHECK(student.size(0) > 0, "distillation loss: empty batch");
  UNIME_CHECK(tau > 0, "distillation loss: temperature must be > 0, got ", tau);
  const auto dt = student.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto s = student.to(dt);
  auto t = teacher.detach().to(dt).to(s.device());
  auto log_ps = torch::log_softmax(torch::matmul(s, s.t()) / tau, 1);  // [n, n]
  auto log_pt = torch::log_softmax(torch::matmul(t, t.t()) / tau, 1);  // [n, n]
  torch::Tensor kl;  // [n, n] pointwise terms
  switch (direction) {
    case KlDirection::TeacherStudent: kl = log_pt.exp() * (log_pt - log_ps); break;
    case KlDirection::StudentTeacher: kl = log_ps.exp() * (log_ps - log_pt); break;
  }
  return kl.sum() / static_cast<double>(s.size(0));
}

}  // namespace unime::train
