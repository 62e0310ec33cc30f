// The losses: the algorithms. Their reductions are small (classes × batch) and computed at root.
#include "compiler/ops/ops.h"

namespace kiln::ops {

LossFuncs CrossEntropyLoss(const Layer& layer, const Context& context, Halide::Func logits,
                           Halide::Func labels) {
  const Vars& v = vars();
  const int classes = static_cast<int>(layer.num_classes);
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

  // The target distribution puts 1 − ε + ε/K on the label and ε/K elsewhere (label smoothing
  // ε), so the loss is logsumexp(z) − Σ_k target_k · z_k. The label term is a sum with a one-hot
  // select: the gradient stays a pure function of (class, n) instead of a scatter.
  const float smoothing = layer.label_smoothing;
  const float off = smoothing / static_cast<float>(classes);
  Halide::Func target_logit("target_logit");
  target_logit(v.n) = 0.0f;
  target_logit(v.n) += Halide::select(labels(v.n) == k, 1.0f - smoothing + off, off) * logits(k, v.n);

  Halide::Func sample_loss("sample_loss");
  sample_loss(v.n) = max_logit(v.n) + Halide::log(sum_exp(v.n)) - target_logit(v.n);

  Halide::RDom b(0, context.batch, "loss_n");
  Halide::Func loss("loss");
  loss() = 0.0f;
  loss() += sample_loss(b) / Halide::cast<float>(context.batch);

  Halide::Func prediction("prediction");
  prediction(v.n) = Halide::argmax(logits(k, v.n))[0];
  Halide::Func correct("correct");
  correct() = 0;
  correct() += Halide::select(prediction(b) == labels(b), 1, 0);

  return {loss, correct, {prefix_max, max_logit, sum_exp, target_logit, sample_loss, prediction}};
}

LossFuncs RegressionLoss(const Layer& layer, const std::vector<int64_t>& shape,
                         const Context& context, Halide::Func prediction, Halide::Func targets) {
  std::vector<Halide::Var> args = prediction.args();
  Halide::Expr z = prediction(args), t = targets(args);
  Halide::Expr value;
  switch (layer.kind) {
    case OpKind::kMseLoss: value = (z - t) * (z - t); break;
    // As a select, so the derivative at 0 is 0 (PyTorch's sign(0)).
    case OpKind::kL1Loss: value = Halide::select(z > t, z - t, z < t, t - z, 0.0f); break;
    // max(z, 0) − z·t + log(1 + exp(−|z|)), stable for large |z|; its derivative is
    // sigmoid(z) − t everywhere, z = 0 included.
    case OpKind::kBceWithLogitsLoss:
      value = Halide::select(z > 0, z, 0.0f) - z * t +
              Halide::log(1.0f + Halide::exp(Halide::select(z > 0, -z, z)));
      break;
    default: break;
  }
  Halide::Func element("element_loss");
  element(args) = value;

  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  Halide::RDom r = shape.size() == 3
                       ? Halide::RDom(0, static_cast<int>(shape[2]), 0, static_cast<int>(shape[1]),
                                      0, static_cast<int>(shape[0]), 0, context.batch, "loss_r")
                       : Halide::RDom(0, static_cast<int>(shape[0]), 0, context.batch, "loss_r");
  std::vector<Halide::Expr> at;
  for (int d = 0; d < r.dimensions(); ++d) at.push_back(r[d]);
  Halide::Func loss("loss");
  loss() = 0.0f;
  loss() += element(at) / Halide::cast<float>(context.batch * static_cast<int>(numel));
  Halide::Func correct("correct");
  correct() = 0;
  return {loss, correct, {element}};
}

}  // namespace kiln::ops
