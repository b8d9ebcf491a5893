"""What every benchmark says about the tree it measured (shared by the benchmark scripts)."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def git_state() -> dict[str, Any]:
    """The commit measured, and what the working tree changes on top of it (``git status``)."""
    def git(*command: str) -> str | None:
        try:
            done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "--short", "HEAD") or "").strip() or None
    status = git("status", "--porcelain", "--untracked-files=all") or ""
    changed = sorted(line[3:] for line in status.splitlines() if line[3:])
    bench = [path for path in changed if path.startswith("benchmarks/")]
    other = [path for path in changed if not path.startswith("benchmarks/")]
    label = commit or "unknown"
    if bench:
        label += " + uncommitted benchmark changes"
    if other:
        label += f" + {len(other)} other uncommitted files"
    return {"git_commit": commit, "measured_on": label, "uncommitted_benchmark_files": bench,
            "uncommitted_other_files": other}


def python_loop_ns() -> float:
    """The machine's pace for plain Python: CPU ns per iteration of a small loop (median of 5).

    Figures from machines of different speed (or one machine under other load) differ; this says
    how fast this one ran the interpreter at the time.
    """
    samples = []
    for _ in range(5):
        t0 = time.process_time_ns()
        total = 0
        for i in range(200_000):
            total += i * i
        samples.append((time.process_time_ns() - t0) / 200_000)
    return round(statistics.median(samples), 1)
