// cross_entropy_loss: the algorithm. Its reductions are small (classes x batch) and computed at root.
#include "compiler/ops/ops.h"

namespace kiln::ops {

CrossEntropy CrossEntropyLoss(int64_t num_classes, Halide::Expr batch, Halide::Func logits,
                              Halide::Func labels) {
  const Vars& v = vars();
  const int classes = static_cast<int>(num_classes);
  Halide::RDom k(0, classes, "loss_k");

  // log Σ exp(z) computed as m + log Σ exp(z − m) with m = max z, so large logits do not overflow.
  // The max is a scan over classes that keeps every prefix maximum, from a constant start,
  // because Halide 14's autodiff rejects an inline maximum() and a running max kept in place.
  Halide::Func prefix_max("prefix_max");
  prefix_max(v.f, v.n) = Halide::Float(32).min();
  prefix_max(k, v.n) = Halide::max(prefix_max(k - 1, v.n), logits(k, v.n));
  Halide::Func max_logit("max_logit");
  max_logit(v.n) = prefix_max(classes - 1, v.n);

  Halide::Func sum_exp("sum_exp");
  sum_exp(v.n) = 0.0f;
  sum_exp(v.n) += Halide::exp(logits(k, v.n) - max_logit(v.n));

  // z[label] as a sum with a one-hot select: the gradient stays a pure function of (class, n)
  // instead of a scatter through the label index.
  Halide::Func label_logit("label_logit");
  label_logit(v.n) = 0.0f;
  label_logit(v.n) += Halide::select(labels(v.n) == k, logits(k, v.n), 0.0f);

  Halide::Func sample_loss("sample_loss");
  sample_loss(v.n) = max_logit(v.n) + Halide::log(sum_exp(v.n)) - label_logit(v.n);

  Halide::RDom b(0, batch, "loss_n");
  Halide::Func loss("loss");
  loss() = 0.0f;
  loss() += sample_loss(b) / Halide::cast<float>(batch);

  Halide::Func prediction("prediction");
  prediction(v.n) = Halide::argmax(logits(k, v.n))[0];
  Halide::Func correct("correct");
  correct() = 0;
  correct() += Halide::select(prediction(b) == labels(b), 1, 0);

  return {loss, correct, {prefix_max, max_logit, sum_exp, label_logit, sample_loss, prediction}};
}

}  // namespace kiln::ops
