// Stage 1 of UniME (arXiv 2504.17432, section 3.2; docs METHOD.md section 2): textual
// discriminative knowledge distillation. For a batch of n sentences with normalised student
// embeddings s [n, Ds] and (offline) teacher embeddings t [n, Dt] (Ds and Dt may differ: only
// similarities are compared):
//   P_t(i,.) = softmax_j(t_i . t_j / tau),  P_s(i,.) = softmax_j(s_i . s_j / tau)   (j over the batch,
//   the diagonal included), loss = mean_i KL(P_t(i,.) || P_s(i,.))    (torch kl_div "batchmean").
// The paper writes the KL with the student on the left; the default is the standard distillation
// direction KL(teacher || student), and KlDirection::StudentTeacher gives the paper's form.
// The teacher never receives a gradient.
// Legend: n batch, Ds student dim, Dt teacher dim.
#pragma once

#include <string>

namespace unime::train {

enum class KlDirection {
  TeacherStudent,  ///< KL(P_t || P_s): sum_j P_t (log P_t - log P_s) (default)
  StudentTeacher,  ///< KL(P_s || P_t): sum_j P_s (log P_s - log P_t)
};

/// "teacher-student" | "student-teacher" -> KlDirection; anything else -> unime::Error.
KlDirection parse_kl_direction(const std::string& s);

/// student [n, Ds], teacher [n, Dt] (both L2-normalised) -> scalar. Computed in float32 (float64
/// when the student is float64).
torch::Tensor loss_distill(const torch::Tensor& student, const torch::Tensor& teacher, double tau,
                           KlDirection direction = KlDirection::TeacherStudent);

}  // namespace unime::train
