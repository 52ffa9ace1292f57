"""`make bench`: every scenario on SQLite and PostgreSQL, then one table.

python -m benchmarks.run [--quick] [--db sqlite,postgres] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from benchmarks import ingest, ingest_runs, replicas, report, scenarios, scim_cycle, world

# Sized to stay under 12 minutes on 2 cores (the sections' seconds are printed at the end):
# the ingest targets are read at 32 connections, the sweep's best at 64; wrk is steady by 6 s.
# SCIM's cycle at 10,000 users took 147 s an engine (11.5 minutes in all, session 7): 8,000
# still outgrow SQLite's default page cache, which is what the flatness check is after.
FULL = {
    "sizes": [1, 50], "conns": [32, 64], "seconds": 6.0,
    "paced": [(50, 500.0), (50, 1000.0), (10, 1000.0)],
    "drain": 6_000, "drain_concurrency": 8, "coalesce": 1_000, "scim": 5_000,
    "memory": 100_000, "memory_seconds": 20.0, "cycle_users": 8_000, "cycle_groups": 200,
}  # fmt: skip
QUICK = {
    "sizes": [1, 50], "conns": [32], "seconds": 2.0, "paced": [(50, 1000.0)],
    "drain": 1_000, "drain_concurrency": 8, "coalesce": 1_000, "scim": 1_000,
    "memory": 10_000, "memory_seconds": 5.0, "cycle_users": 1_000, "cycle_groups": 20,
}  # fmt: skip


def machine(pg_version: str | None) -> dict[str, Any]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    mem_kb = next(
        int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )  # fmt: skip
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "postgresql": pg_version, "load_before": os.getloadavg(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument(
        "--only",
        default="ingest,replicas,drain,coalesce,coalesce_delay,scim,scim_cycle,memory",
    )
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--size", action="append", default=[], help="override, e.g. scim=2000")
    args = parser.parse_args()
    size = dict(QUICK if args.quick else FULL)
    for override in args.size:
        key, _, value = override.partition("=")
        size[key] = float(value) if "seconds" in key else int(value)
    kinds = [k for k in args.db.split(",") if k]
    only = set(args.only.split(","))
    ingest.find_wrk()  # fail early, and clearly, without a load generator
    workdir = Path(tempfile.mkdtemp(prefix="cor-bridge-bench-"))
    world.write_mapping(workdir)
    dbs = world.Databases(workdir)
    started = time.monotonic()
    results: dict[str, Any] = {}
    try:
        pg = dbs.start_postgres() if "postgres" in kinds else None
        results["machine"] = machine(pg)
        if "ingest" in only:
            print("ingest: the ceiling ...", file=sys.stderr, flush=True)
            begun = time.monotonic()
            results["ceiling"] = ingest_runs.ceiling_sweep(workdir, size)
            results["ceiling_seconds"] = round(time.monotonic() - begun)
        for kind in kinds:
            results[kind] = run_kind(dbs, kind, workdir, size, only)
    finally:
        dbs.stop()
    results["machine"]["load_after"] = os.getloadavg()
    results["minutes"] = round((time.monotonic() - started) / 60, 1)
    print(report.render(results, kinds))
    if args.json:
        args.json.write_text(json.dumps(results, default=_plain, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)


def run_kind(
    dbs: world.Databases, kind: str, workdir: Path, size: dict[str, Any], only: set[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": {}}

    def step(name: str, *call: Any) -> None:
        if name in only:
            print(f"{kind}: {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            out[name] = call[0](dbs, kind, workdir, *call[1:])
            out["seconds"][name] = round(time.monotonic() - started)

    step("ingest", ingest_runs.ingest_bridge, size["sizes"], size["conns"], size["seconds"],
         size["paced"])  # fmt: skip
    if kind == "postgres":
        step("replicas", replicas.replicas, size["seconds"], size["scim"])
    step("drain", scenarios.drain, size["drain"], 20.0, size["drain_concurrency"])
    step("coalesce", scenarios.coalesce, size["coalesce"], 200, 50, 20.0, 0.0)
    step("coalesce_delay", scenarios.coalesce, size["coalesce"], 200, 50, 20.0, 2.0)
    step("scim", scenarios.scim, size["scim"], 100)
    step("scim_cycle", scim_cycle.scim_cycle, size["cycle_users"], size["cycle_groups"])
    step("memory", scenarios.memory, size["memory"], size["memory_seconds"])
    return out


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        data = asdict(value)
        data.pop("acked_ids", None)
        return data
    return str(value)


if __name__ == "__main__":
    main()
