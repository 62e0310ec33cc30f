#!/usr/bin/env python3
"""Runs Kiln's benchmark beside PyTorch's on the same model, batch and threads, and reports ratios.

Rounds alternate between the two programs so that both see the same machine load; each figure is
the best over the rounds. Needs a built kiln-bench; PyTorch is optional (without it only Kiln's
figures are printed).

    python3 bench/compare.py --build build --rounds 5 --json docs/bench-lenet5.json
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = [
    ("train_images_per_second", "training step, images/s", True),
    ("inference_images_per_second", "inference, images/s", True),
    ("inference_batch1_latency_ms", "inference batch 1, latency ms", False),
]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_json(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"compare.py: {' '.join(command)} failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def torch_available(python):
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build", help="CMake build directory with kiln-bench")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per figure and round")
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter with PyTorch")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.rounds < 1 or not args.seconds > 0 or args.seconds == float("inf"):
        parser.error("--rounds must be at least 1 and --seconds positive and finite")
    bench = os.path.join(args.build, "kiln-bench")
    if not os.access(bench, os.X_OK):
        parser.error(f"{bench} not found: build first (tools/build.sh) or pass --build DIR")

    kiln_command = [os.path.join(args.build, "kiln-bench"), f"--model={args.model}", f"--batch={args.batch}",
                    f"--threads={args.threads}", f"--seconds={args.seconds}"]
    torch_command = [args.python, os.path.join(HERE, "pytorch_lenet5.py"), f"--batch={args.batch}",
                     f"--threads={args.threads}", f"--seconds={args.seconds}"]
    with_torch = args.model == "lenet5" and torch_available(args.python)
    if not with_torch:
        print("PyTorch is not importable (or has no twin of this model): reporting Kiln only", file=sys.stderr)

    kiln_runs, torch_runs = [], []
    for round_index in range(args.rounds):
        kiln_runs.append(run_json(kiln_command))
        if with_torch:
            torch_runs.append(run_json(torch_command))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    def best(runs, key, higher):
        values = [r[key] for r in runs]
        return max(values) if higher else min(values)

    rows = []
    for key, label, higher in FIGURES:
        row = {"figure": label, "kiln": best(kiln_runs, key, higher),
               "kiln_median": statistics.median(r[key] for r in kiln_runs)}
        if with_torch:
            row["pytorch"] = best(torch_runs, key, higher)
            row["pytorch_median"] = statistics.median(r[key] for r in torch_runs)
            # Speedup of Kiln: a throughput ratio, or the inverse ratio of latencies.
            row["speedup"] = row["kiln"] / row["pytorch"] if higher else row["pytorch"] / row["kiln"]
        rows.append(row)

    print(f"\n{args.model}, batch {args.batch}, {args.threads} threads, best of {args.rounds} rounds; "
          f"Kiln schedule {kiln_runs[0]['schedule']}; peer {torch_runs[0]['peer'] if with_torch else 'none'}")
    print(f"{'figure':<32} {'Kiln':>12} {'PyTorch':>12} {'Kiln speedup':>13}")
    for row in rows:
        number = "12,.0f" if row["figure"].endswith("images/s") else "12.4f"
        torch_text = f"{row['pytorch']:{number}}" if with_torch else f"{'-':>12}"
        speedup = f"{row['speedup']:12.2f}x" if with_torch else f"{'-':>13}"
        print(f"{row['figure']:<32} {row['kiln']:{number}} {torch_text} {speedup}")

    if args.json:
        record = {"date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
                  "cpus": os.cpu_count(), "model": args.model, "batch": args.batch, "threads": args.threads,
                  "rounds": args.rounds, "schedule": kiln_runs[0]["schedule"],
                  "peer": torch_runs[0]["peer"] if with_torch else None, "rows": rows}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


if __name__ == "__main__":
    main()
