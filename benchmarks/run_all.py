"""`make bench`: every benchmark in turn, each writing its section of BENCHMARKS.md and its
benchmarks/results/<name>.json; then the time each stage took (section "make bench").

Resumable at two levels: inside a stage, every run, search, export and fine-tune is cached under
benchmarks/work/; across stages, a finished stage leaves a stamp (benchmarks/work/stages/) naming
the commit it ran on, and is skipped while its inputs (its script, the benchmark modules it
imports, the package, recipes and spaces) are unchanged since, so an interrupted `make bench`
starts again at the stage it stopped in, and a change re-runs only the stages it touches.
`--fresh` ignores the stamps (the caches inside stages still count).

`--pause` / `--resume` stop and continue a running `make bench` (the stage's processes and this one)
to free the cores for a while; the time table leaves the pause out (not during the timed stages, whose
step timings would include it).

`make bench-smoke` (AUTODISTIL_BENCH_SMOKE=1) runs every stage the same way on minutes-sized budgets
(common.SMOKE, and SMOKE_ARGS below) into benchmarks/work-smoke/, report included: a check that a
change to the benchmarks runs through, not a measurement.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import REPO, SMOKE, WORK
from report import commit, machine, markdown_table, write_results, write_section

from autodistil_evo.fileio import write_json

# The students' evidence, within 3 hours on the 2-core machine: two cheap stages, then the bench
# SuperLMs and what users ask of them: does the proxy rank students as fine-tuning does, and is the
# student the tool finds better than the do-it-yourself ones at equal compute.
STAGES = [
    ["supernet_overhead.py"],
    ["train_throughput.py"],
    ["proxy_correlation.py", "--alone", "0"],  # trains the bench SuperLMs (recipes/bench.yaml) and searches them
    ["bench_superlms.py"],
    ["equal_compute.py", "--no-diagnostics"],  # the searched arch distilled alone is a study
    # embedding students against sentence-transformers' own recipe at equal compute, judged on STS-B (the rows that
    # explain the tool's are a study)
    ["embedding_students.py", "--no-diagnostics"],
]
# `make bench-studies` (--studies): measurements kept out of `make bench` for its time; their last
# results stay in BENCHMARKS.md with the commit that measured them. The first three measure the
# package's machinery (search, serving, data loading), not the students.
STUDIES = [
    ["search_quality.py"],
    ["deploy.py"],
    ["data_scale.py"],
    ["proxy_correlation.py"],  # with its standalone distillations (the students' fine-tunes are make bench's)
    ["embedding.py"],  # fidelity of the bench search's front against layer-drop and PCA, with the embedding term's run
    # AutoDistil's K=3 vs K=1 ablation; at the bench budget its K=3 students are equal compute's.
    ["k_subspaces.py", "--budget", "bench"],
    ["k_subspaces.py", "--budget", "quickstart"],
    ["closing_gap.py"],
    ["rewire.py"],
    ["channel_order.py"],  # which hidden-channel order keeps more of the teacher at step 0 (STS-B)
    ["equal_compute.py"],  # adds searched-alone (the shape or the weights?) to make bench's cached rows
    # Levers of the tool's path, each on the equal-compute benchmark.
    ["equal_compute.py", "--space", "spaces/minilm-l6-wide.yaml"],
    ["equal_compute.py", "--rewire"],
    ["equal_compute.py", "--order-hidden"],
    ["embedding_students.py"],  # adds searched-alone and tool+relations to make bench's cached rows
]
STAMPS = WORK / "stages"
RUNNING = STAMPS / "running.json"  # the running `make bench`: its pid and its stage's process group
# What each stage is given under smoke on top of common's smoke budgets: the knobs it has of its own.
SMOKE_ARGS = {
    "supernet_overhead.py": ["--repeats", "2"],
    "train_throughput.py": ["--steps", "2"],
    "search_quality.py": ["--seeds", "2", "--population", "8", "--budgets", "8,16", "--eval-samples", "4",
                          "--latency-budgets", "8,16", "--latency-population", "4", "--inner-evaluations", "100"],
    "deploy.py": ["--students", "2"],
    "data_scale.py": ["--sizes", "2e5,4e5", "--old-max-tokens", "4e5"],
    "proxy_correlation.py": ["--front", "4", "--off", "2"],
    "embedding.py": ["--students", "3", "--sentences", "200"],
    "channel_order.py": ["--widths", "192", "--sentences", "100"],
}


def inputs(stage: list) -> list:
    """What a stage's numbers depend on: its script and the benchmark modules it imports (transitively),
    the package, the recipes and the spaces."""
    local, todo, seen = {p.stem for p in (REPO / "benchmarks").glob("*.py")}, [Path(stage[0]).stem], set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += set(re.findall(r"^(?:from|import) (\w+)", (REPO / "benchmarks" / f"{name}.py").read_text(), re.M)) & local
    return [*(f"benchmarks/{m}.py" for m in sorted(seen)), "autodistil_evo", "recipes", "spaces", "setup.py"]


def unchanged(stamp: dict | None, stage: list) -> bool:
    """The stamp is from a commit whose inputs of the stage equal the working tree's."""
    if not stamp or stamp.get("commit", "unknown") == "unknown":
        return False
    return subprocess.run(["git", "diff", "--quiet", stamp["commit"], "--", *inputs(stage)], cwd=REPO).returncode == 0


def cpu_gflops(seconds: float = 1.0) -> float:
    """This machine's fp32 matmul speed (GFLOP/s, median of 3), taken once per invocation: stages of one
    `make bench` resumed across sessions may run on machines of the same name but not the same speed
    (2.3x apart here), so each stage's time is shown beside the speed it ran at."""
    import statistics

    import torch

    a = torch.randn(512, 512)
    for _ in range(10):  # warm-up
        a @ a
    rates = []
    for _ in range(3):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ a
            count += 1
        rates.append(count * 2 * 512**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


class Stopwatch:
    """Wall seconds since it started, less the time this process was stopped (`--pause`, or Ctrl-Z), seen as
    gaps in a heartbeat thread's ticks: a stopped process's threads all stand still."""

    def __init__(self, tick: float = 0.5, gap: float = 5.0):
        self.tick, self.gap = tick, gap
        self.start = self.last = time.monotonic()
        self.paused, self.lock = 0.0, threading.Lock()
        threading.Thread(target=self._beat, daemon=True).start()

    def _stopped(self, now: float) -> float:
        """The gap since the last tick, where it is long enough to have been a stop."""
        return now - self.last - self.tick if now - self.last > self.gap else 0.0

    def _beat(self):
        while True:
            time.sleep(self.tick)
            with self.lock:
                now = time.monotonic()
                self.paused += self._stopped(now)
                self.last = now

    def seconds(self) -> float:
        # A stop the heartbeat has not seen yet (read just after SIGCONT) is left out too.
        with self.lock:
            now = time.monotonic()
            return now - self.start - self.paused - self._stopped(now)


def signal_running(sig: int) -> None:
    """Send `sig` (SIGSTOP, SIGCONT) to the running `make bench` and its stage's processes."""
    if not RUNNING.is_file():
        raise SystemExit(f"no make bench is running ({RUNNING} not found)")
    running = json.loads(RUNNING.read_text())
    for send, target in ((os.killpg, running.get("stage_pgid")), (os.kill, running["pid"])):
        if target:
            try:
                send(target, sig)
            except ProcessLookupError:
                pass
    print(f"make bench (pid {running['pid']}): {'paused' if sig == signal.SIGSTOP else 'resumed'}")


def unfinished(known: dict, seconds: float) -> dict:
    """The stamp of a stage still running or interrupted: the time it has run so far, for a resumed stage to count."""
    return {**known, "finished": None, "interrupted_seconds": seconds}


def stage_name(stage: list) -> str:
    return " ".join(stage).replace(".py", "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh", action="store_true", help="run every stage, even those stamped as finished")
    parser.add_argument("--studies", action="store_true", help="run the studies kept out of make bench instead")
    parser.add_argument("--pause", action="store_true", help="stop the running make bench (its time stops too)")
    parser.add_argument("--resume", action="store_true", help="continue a paused make bench")
    args = parser.parse_args()
    if args.pause or args.resume:
        return signal_running(signal.SIGSTOP if args.pause else signal.SIGCONT)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` stops the stage and keeps its time
    head, speed, clock = commit(), cpu_gflops(), Stopwatch()
    print(f"== CPU speed: {speed:.0f} GFLOP/s (fp32 matmul)", flush=True)
    STAMPS.mkdir(parents=True, exist_ok=True)
    done = []
    for stage in STUDIES if args.studies else STAGES:
        stamp = STAMPS / (stage_name(stage).replace(" ", "_") + ".json")
        kept = json.loads(stamp.read_text()) if stamp.is_file() and not args.fresh else None
        if kept and kept.get("finished") and unchanged(kept, stage):
            print(f"== benchmarks/{' '.join(stage)}: finished earlier ({kept['seconds'] / 60:.1f} min), skipped", flush=True)
            done.append({**kept, "this_invocation": False})
            continue
        print(f"== benchmarks/{' '.join(stage)}", flush=True)
        earlier = kept.get("interrupted_seconds", 0.0) if kept and not kept.get("finished") and unchanged(kept, stage) else 0.0
        start = clock.seconds()
        known = {"stage": stage_name(stage), "commit": head, "cpu_gflops": speed}  # in the stamp either way
        # Its own process group, so an interruption stops the stage's subprocesses (train, finetune) too.
        smoke = SMOKE_ARGS.get(stage[0], []) if SMOKE else []
        child = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / stage[0]), *stage[1:], *smoke], cwd=REPO,
                                 start_new_session=True)
        write_json(RUNNING, {"pid": os.getpid(), "stage_pgid": child.pid})
        try:
            saved = time.monotonic()
            while child.poll() is None:
                time.sleep(1)
                if time.monotonic() - saved > 60:  # the time so far, so that a killed bench loses at most a minute of it
                    write_json(stamp, unfinished(known, earlier + clock.seconds() - start))
                    saved = time.monotonic()
            if child.returncode:
                raise SystemExit(f"benchmarks/{' '.join(stage)} failed (exit {child.returncode})")
            kept = {**known, "seconds": earlier + clock.seconds() - start,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        except BaseException:  # interrupted or failed: keep the time spent, so the resumed stage counts it
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait()
            kept = unfinished(known, earlier + clock.seconds() - start)
            raise
        finally:
            write_json(stamp, kept)  # atomic: a half-written stamp would stop the next run
            RUNNING.unlink(missing_ok=True)
        done.append({**kept, "this_invocation": True})
    if args.studies:
        return
    total = sum(s["seconds"] for s in done)
    write_results("make_bench", {"commit": head, "total_seconds": total, "stages": done})
    gflops = lambda s: f"{s['cpu_gflops']:.0f}" if s.get("cpu_gflops") else "not taken"  # noqa: E731 (older stamps)
    table = markdown_table(["stage", "minutes", "CPU GFLOP/s (last attempt)", "finished", "commit"],
                           [(s["stage"], f"{s['seconds'] / 60:.1f}", gflops(s), s["finished"], s["commit"][:10]) for s in done] +
                           [("**total**", f"**{total / 60:.1f}**", "", "", "")])
    write_section("make_bench", f"## `make bench`: time per stage\n\nMachine: {machine()}. "
                  "Each stage's wall time, summed over its attempts where `make bench` was interrupted and "
                  "resumed (the total leaves out the time between attempts and any `--pause`), beside this machine's fp32 matmul speed when the stage "
                  "last ran (a resumed `make bench` may have moved between machines); a stage re-run because its inputs changed counts "
                  "that re-run only, with the caches of its earlier run. "
                  f"Caches under `benchmarks/work/` start empty in a fresh clone.\n\nCommand: `make bench`\n\n{table}\n")


if __name__ == "__main__":
    main()
