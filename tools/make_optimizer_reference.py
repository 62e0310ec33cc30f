#!/usr/bin/env python3
"""Writes tests/data/optimizer_reference.safetensors: torch.optim on given gradients.

tests/optimizer_test.cpp applies Kiln's compiled optimizers to the same start and gradients and
compares. Each case runs five steps of one optimizer on four tensors. The largest, of 4,107
values, spans more than one chunk of Kiln's sum of squares. Parameter groups carry the
learning-rate multipliers, and the cases that set max_grad_norm call clip_grad_norm_ before each
step. The file also stores the learning rates of torch.optim.lr_scheduler schedules per epoch.

    /usr/bin/python3 tools/make_optimizer_reference.py [tests/data/optimizer_reference.safetensors]

Needs PyTorch (1.13 was used) and numpy; the tests do not.
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

STEPS = 5
# Name, shape: the layout of the flat array, in order.
TENSORS = [("a.weight", (4, 5)), ("a.bias", (5,)), ("b.weight", (37, 111)), ("b.bias", (3,))]

# Each case: the Kiln optimizer options (names as kiln::OptimizerOptions) in JSON metadata.
CASES = {
    "sgd_plain": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0},
    "sgd_momentum_decay": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                           "weight_decay": 1e-3},
    "sgd_nesterov_mult": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                          "weight_decay": 1e-4, "lr_mult": {"b": 0.1}},
    "sgd_clip": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0,
                 "max_grad_norm": 0.5},
    "adam_default": {"optimizer": "adam", "lr": 1e-3},
    "adam_decay_betas": {"optimizer": "adam", "lr": 1e-2, "weight_decay": 1e-2, "beta1": 0.8,
                         "beta2": 0.99, "eps": 1e-6},
    "adamw_mult": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1,
                   "lr_mult": {"a": 0.5}},
    "adamw_clip": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.01, "max_grad_norm": 1.0},
}

# Each schedule: the Kiln LrSchedule (names as kiln::LrSchedule) and the epochs of the run.
SCHEDULES = {
    "step": {"schedule": "step", "step_size": 3, "gamma": 0.5, "epochs": 10},
    "cosine": {"schedule": "cosine", "min_lr": 1e-4, "epochs": 10},
    "warmup_cosine": {"schedule": "cosine", "warmup_epochs": 3, "warmup_start_factor": 0.1,
                      "epochs": 10},
    "warmup_step": {"schedule": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 2,
                    "warmup_start_factor": 0.25, "epochs": 9},
    "warmup_constant": {"schedule": "constant", "warmup_epochs": 4, "warmup_start_factor": 0.5,
                        "epochs": 6},
}
BASE_LR = 0.1


def run_case(case, start, grads):
    params = [torch.nn.Parameter(torch.tensor(s)) for s in start]
    groups = []
    for name_shape, p in zip(TENSORS, params):
        layer = name_shape[0].split(".")[0]
        factor = case.get("lr_mult", {}).get(layer, 1.0)
        groups.append({"params": [p], "lr": case["lr"] * factor})
    kind = case["optimizer"]
    if kind == "sgd":
        opt = torch.optim.SGD(groups, lr=case["lr"], momentum=case["momentum"],
                              nesterov=case.get("nesterov", False),
                              weight_decay=case["weight_decay"])
    else:
        cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=case["lr"], betas=(case.get("beta1", 0.9), case.get("beta2", 0.999)),
                  eps=case.get("eps", 1e-8), weight_decay=case.get("weight_decay", 0.0))
    for step in range(STEPS):
        for p, g in zip(params, grads[step]):
            p.grad = torch.tensor(g)
        if case.get("max_grad_norm", 0) > 0:
            torch.nn.utils.clip_grad_norm_(params, case["max_grad_norm"])
        opt.step()
    flat = lambda arrays: np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays])
    out = {"params": flat([p.detach().numpy() for p in params])}
    for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
        states = [opt.state[p].get(key) for p in params]
        if all(s is not None for s in states):
            out[key] = flat([s.numpy() for s in states])
    return out


def schedule_lrs(spec):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    epochs = spec["epochs"]
    warmup = spec.get("warmup_epochs", 0)
    remaining = epochs - warmup
    kind = spec["schedule"]
    if kind == "step":
        main = torch.optim.lr_scheduler.StepLR(opt, spec["step_size"], spec["gamma"])
    elif kind == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, remaining, spec.get("min_lr", 0))
    else:
        main = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if warmup > 0:
        linear = torch.optim.lr_scheduler.LinearLR(opt, spec["warmup_start_factor"], 1.0,
                                                   total_iters=warmup)
        # SequentialLR re-creates the schedulers' starts; build it after both.
        scheduler = torch.optim.lr_scheduler.SequentialLR(opt, [linear, main], [warmup])
    else:
        scheduler = main
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(lrs, np.float64)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "data", "optimizer_reference.safetensors")
    rng = np.random.default_rng(7)
    start = [rng.uniform(-1, 1, shape).astype(np.float32) for _, shape in TENSORS]
    # Gradients of varied scale, so that clipping changes some steps and not others.
    grads = [[(rng.normal(0, 1, shape) * (0.05 + 0.4 * step)).astype(np.float32)
              for _, shape in TENSORS] for step in range(STEPS)]
    arrays = {"start": np.concatenate([s.reshape(-1) for s in start])}
    for step in range(STEPS):
        arrays[f"grads.{step}"] = np.concatenate([g.reshape(-1) for g in grads[step]])
    for name, case in CASES.items():
        for key, value in run_case(case, start, grads).items():
            arrays[f"{name}.{key}"] = value
    for name, spec in SCHEDULES.items():
        arrays[f"schedule.{name}"] = schedule_lrs(spec)
    metadata = {
        "tensors": json.dumps([[n, list(s)] for n, s in TENSORS]),
        "steps": str(STEPS),
        "cases": json.dumps(CASES),
        "schedules": json.dumps(SCHEDULES),
        "base_lr": repr(BASE_LR),
        "torch": torch.__version__,
    }
    write_safetensors(out, arrays, metadata)
    print(f"wrote {out}: {len(CASES)} optimizer cases, {len(SCHEDULES)} schedules")


if __name__ == "__main__":
    main()
