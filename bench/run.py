"""Run the benchmark scenarios against the chat server and their baselines; print the table.

usage: python bench/run.py [--scenario F1,F2,...] [--runs 3] [--smoke] [--subscribers N] ...
Results go to bench/results/<timestamp>/ (results.json, table.md, logs). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH, LOAD_CPU, Postgres, log  # noqa: E402
from scenarios import SCENARIOS, Ctx  # noqa: E402

SIZE_FLAGS = {
    "subscribers": int, "rate": float, "duration": float, "window": int, "rooms": int, "members": int,
    "users": int, "idle": int, "clients": int, "turns": int, "tokens": int, "streams": int, "delay": float,
}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default=",".join(SCENARIOS), help="comma-separated ids (default: all)")
    p.add_argument("--runs", type=int, help="repetitions of each scenario (default 3; 1 with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run, a few seconds per scenario")
    p.add_argument("--database-url", help="use this PostgreSQL (a database per scenario is created on it) "
                   "instead of a private embedded cluster pinned to CPU 1")
    p.add_argument("--py-spy", help="path to py-spy: profile the chat server in each measured window "
                   "(collapsed stacks in the results folder; the figures of such a run are perturbed)")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<timestamp>)")
    for name, kind in SIZE_FLAGS.items():
        p.add_argument(f"--{name}", type=kind, help="scenario size override")
    return p.parse_args(argv)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| id | metric | ours | baseline | ratio | target | result | notes |",
             "|---|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        verdict = "report" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append(f"| {r['id']} | {r['metric']} | {fmt(r['ours'])} | {fmt(r['base'])} | {ratio} | "
                     f"{r['target']} | {verdict} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse(argv)
    ids = [s.strip().upper() for s in args.scenario.split(",") if s.strip()]
    unknown = [s for s in ids if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    if os.cpu_count() and os.cpu_count() < 2:  # type: ignore[operator]
        raise SystemExit("needs 2 CPUs: the server on CPU 0, the load generator on CPU 1")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # F4: 10k sockets each side; children inherit
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this orchestrator stays off the server's core
    out = args.out or BENCH / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    sizes = {k: getattr(args, k) for k in SIZE_FLAGS if getattr(args, k) is not None}
    pg = Postgres(out, args.database_url)
    ctx = Ctx(pg=pg, out=out, runs=args.runs or (1 if args.smoke else 3), smoke=args.smoke, sizes=sizes,
              py_spy=args.py_spy)
    started = time.time()
    git = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=BENCH.parent, capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--short", "--untracked-files=no"], cwd=BENCH.parent,
                           capture_output=True, text=True).stdout.split("\n")
    log(f"code under test: {git}")
    failed: list[str] = []
    try:
        for sid in ids:
            t0 = time.monotonic()
            log(f"== {sid}")
            try:
                SCENARIOS[sid](ctx)
            except Exception as e:  # one broken scenario doesn't lose the others' numbers
                log(f"{sid} failed: {e!r}")
                failed.append(sid)
                ctx.rows.append({"id": sid, "metric": "(scenario failed)", "ours": None, "base": None, "ratio": None,
                                 "target": "-", "pass": False, "note": repr(e)[:200]})
            log(f"== {sid} took {time.monotonic() - t0:.0f}s")
    finally:
        pg.stop()
    md = table(ctx.rows)
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}"
    (out / "table.md").write_text(md + "\n")
    (out / "results.json").write_text(json.dumps({
        "argv": argv, "started": started, "git": git, "dirty": [d for d in dirty if d], "machine": machine,
        "runs": ctx.runs, "smoke": args.smoke,
        "sizes": sizes, "rows": ctx.rows, "raw": ctx.raw}, indent=1, default=str))
    print(md)
    print(f"\n{machine}; code {git}; {ctx.runs} run(s) per scenario, medians; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
