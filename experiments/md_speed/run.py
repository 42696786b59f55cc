"""MD steps/s of our calculator (eager and exported) vs mace-torch's, interleaved.

For each repeat, system and thread count, runs ``md_steps.py`` once per engine, one after the
other (never in parallel), appends every JSON line to ``WORK/results.jsonl`` and prints the
medians as a markdown table. Run from the repository root in our venv:

    python experiments/md_speed/run.py --repeats 3 --threads 1 2

mace-torch runs in its own venv (``--mace-python``, default <repository>/.peer-mace/bin/python; see
../shared/bench/peer_mace/README.md); ``--engines`` leaves engines out; ``--table`` prints the
table of the lines already in ``WORK/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = {"aspirin": (100, 10), "cu500": (8, 2)}
"""Default timed and warm-up steps per system."""


def run_once(
    python: str, engine: str, system: str, threads: int, work: Path, steps: tuple[int, int]
) -> dict:
    timed, warmup = steps
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        # e3nn 0.4.4 (mace-torch's) loads its own constants with torch.load's old default
        "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1" if engine == "mace" else "0",
    }
    command = [
        python,
        str(HERE / "md_steps.py"),
        f"--engine={engine}",
        f"--system={system}",
        f"--threads={threads}",
        f"--steps={timed}",
        f"--warmup={warmup}",
        f"--work={work}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"run.py: error: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def table(results: list[dict]) -> str:
    """Median steps/s per system, engine and thread count, and ours / mace-torch."""
    rows = [
        "| system | threads | engine | steps/s (median) | runs | vs mace-torch |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["system"], r["threads"]) for r in results})
    for system, threads in keys:
        medians = {}
        for engine in ("ours", "exported", "mace"):
            values = [
                r["steps_per_s"]
                for r in results
                if (r["system"], r["threads"], r["engine"]) == (system, threads, engine)
            ]
            if values:
                medians[engine] = (statistics.median(values), len(values))
        for engine, (median, runs) in medians.items():
            ratio = f"{median / medians['mace'][0]:.2f}x" if "mace" in medians else "-"
            rows.append(f"| {system} | {threads} | {engine} | {median:.2f} | {runs} | {ratio} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--systems", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--engines", nargs="+", default=["ours", "exported", "mace"])
    parser.add_argument(
        "--mace-python", type=Path, default=HERE.parents[1] / ".peer-mace" / "bin" / "python"
    )
    parser.add_argument("--work", type=Path, default=HERE / "scratch")
    parser.add_argument(
        "--steps",
        nargs=2,
        type=int,
        action="append",
        metavar=("TIMED", "WARMUP"),
        help="steps per system, in the order of --systems (default: 100 10 and 8 2)",
    )
    parser.add_argument(
        "--table", action="store_true", help="only print the table of WORK/results.jsonl"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "results.jsonl"
    if args.table:
        print(table([json.loads(line) for line in log.read_text().splitlines() if line]))
        return
    steps = dict(zip(args.systems, args.steps or [STEPS[s] for s in args.systems], strict=True))
    results = []
    for repeat in range(args.repeats):
        for system in args.systems:
            for threads in args.threads:
                for engine in args.engines:
                    # the venv's own path: resolving its python symlink would leave the venv
                    mace_python = str(args.mace_python.absolute())
                    python = mace_python if engine == "mace" else sys.executable
                    result = run_once(
                        python, engine, system, threads, args.work.resolve(), steps[system]
                    )
                    result["repeat"] = repeat
                    results.append(result)
                    with log.open("a") as out:
                        out.write(json.dumps(result) + "\n")
                    print(json.dumps(result), flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
