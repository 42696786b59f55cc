"""Page faults and time of training-step-sized allocations with and without the allocator setting.

Each measurement is a fresh process that allocates and frees a force-training step's edge and
node tensors (0.6-5 MB each) ``--steps`` times, after one warm-up step, and reports its minor
page faults and wall time. Single processes vary about 2x on a busy machine, so the script
alternates the two modes ``--runs`` times and prints the medians.

    python experiments/allocator/benchmark.py [--runs 5] [--steps 10] [--megabytes 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

STEP = """
import json, resource, sys, time
import torch
if sys.argv[1] != "default":
    from physicsml.allocator import keep_freed_memory
    assert keep_freed_memory(int(sys.argv[1]))
steps = int(sys.argv[2])
def step():
    tensors = [torch.empty(n).fill_(1.0) for n in (1200000, 800000, 300000, 1200000, 600000)]
    del tensors
step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
for _ in range(steps):
    step()
seconds = time.perf_counter() - start
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"faults": faults, "ms_per_step": 1000 * seconds / steps}))
"""


def measure(mode: str, steps: int) -> dict[str, float]:
    """One fresh process: ``mode`` is ``default`` or the setting's size in MiB."""
    done = subprocess.run(
        [sys.executable, "-c", STEP, mode, str(steps)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="processes per mode")
    parser.add_argument("--steps", type=int, default=10, help="measured steps per process")
    parser.add_argument("--megabytes", type=int, default=256, help="keep_freed_memory's size")
    args = parser.parse_args()
    modes = {"default": "default", f"keep_freed_memory({args.megabytes})": str(args.megabytes)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    for _ in range(args.runs):  # alternate, so that a change of load hits both modes
        for name, mode in modes.items():
            runs[name].append(measure(mode, args.steps))
    print(f"medians of {args.runs} processes, {args.steps} steps each")
    for name, results in runs.items():
        faults = statistics.median(r["faults"] for r in results)
        ms = statistics.median(r["ms_per_step"] for r in results)
        print(f"{name:>24}: {faults:8.0f} minor page faults, {ms:6.2f} ms per step")
    default, kept = (statistics.median(r["faults"] for r in runs[name]) for name in modes)
    print(f"{'kept / default faults':>24}: {kept / default:.2f}")


if __name__ == "__main__":
    main()
