"""Side-by-side A/B of ingest variants: the durable ceiling, then each variant, run after run.

python -m benchmarks.ingest_ab [--db sqlite,postgres] [--sizes 1,50] [--seconds 6]
    [--rounds 2] [--conns 32] [--ceiling-each] VARIANT ...

A VARIANT is `NAME=REF[+ENV=VALUE...]`: the bridge at git REF (`.` for the work tree as it
is), started with those extra environment variables (e.g. `small=HEAD+BRIDGE_WORKER_BATCH=50`).
`--ceiling-each` runs the durable ceiling from each variant's tree (for changes to the
uvicorn settings it shares with `cor-bridge serve`) instead of once from this one. Each
REF other than `.` is checked out with `git archive` into a folder of its own and run from it
with this venv's Python. For every (round, engine, size) the durable ceiling runs on a fresh
database, then every variant on a fresh database, so ratios compare runs made minutes apart
at most. Prints events/s, p99, the server's CPU per delivery and the ratio to the ceiling;
checks every acknowledged event is stored (0 missing).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import ingest, procs, world
from benchmarks.ingest_runs import _settle
from benchmarks.procs import ROOT, running
from benchmarks.scenarios import HOLD
from benchmarks.tables import table


@dataclass
class Variant:
    name: str
    ref: str
    env: dict[str, str] = field(default_factory=dict)
    source: Path = ROOT

    @classmethod
    def parse(cls, text: str) -> Variant:
        name, _, rest = text.partition("=")
        ref, *pairs = rest.split("+")
        env = dict(p.split("=", 1) for p in pairs)
        return cls(name, ref or ".", env)

    def checkout(self, into: Path) -> None:
        if self.ref == ".":
            return
        self.source = into / self.name
        self.source.mkdir()
        archive = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), "archive", self.ref],  # noqa: S607
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(self.source)], input=archive, check=True)  # noqa: S603,S607


def bridge(variant: Variant, workdir: Path, url: str, cor_url: str) -> procs.Proc:
    """`cor-bridge serve` with the variant's source first on the path (PYTHONPATH)."""
    env = {"pythonpath": str(variant.source), **variant.env}
    return procs.bridge(workdir, url, cor_url, bridge_delivery_delay_seconds=HOLD, **env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--sizes", default="1,50")
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--ceiling-each", action="store_true", help="a durable ceiling from each variant's tree"
    )
    args = parser.parse_args()
    variants = [Variant.parse(v) for v in args.variants]
    kinds = args.db.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="cor-bridge-ab-"))
    for v in variants:
        v.checkout(workdir)
    world.write_mapping(workdir)
    dbs = world.Databases(workdir)
    rows = []
    try:
        if "postgres" in kinds:
            dbs.start_postgres()
        with running(procs.standin(workdir, 0), "/sandbox/cor/calls") as cor:
            for rnd in range(1, args.rounds + 1):
                for kind in kinds:
                    for n in sizes:
                        last = _one(dbs, kind, workdir, cor.url, variants, n, args, rnd)
                        print("\n".join(table(HEADER, last)), flush=True)
                        rows += last
    finally:
        dbs.stop()
    print("\n".join(table(HEADER, rows)))


HEADER = ["round", "db", "ev/req", "variant", "ev/s", "p50 ms", "p99 ms", "cpu ms",
          "ratio", "p99 ratio", "missing"]  # fmt: skip


def _one(
    dbs: world.Databases, kind: str, workdir: Path, cor_url: str, variants: list[Variant],
    n: int, args: argparse.Namespace, rnd: int,
) -> list[list[object]]:  # fmt: skip
    out: list[list[object]] = []
    ceil = None
    for v in variants:
        if ceil is None or args.ceiling_each:
            ceil = _ceiling(dbs, kind, workdir, v, n, args)
            name = f"durable({v.name})" if args.ceiling_each else "durable"
            out.append([rnd, kind, n, name, f"{ceil.events_per_s:.0f}", f"{ceil.p50_ms:.1f}",
                        f"{ceil.p99_ms:.1f}", f"{ceil.cpu_ms:.2f}", "", "", ""])  # fmt: skip
        with dbs.fresh(kind) as url:
            b = bridge(v, workdir, url, cor_url + "/sandbox/cor")
            with running(b, "/healthz"):
                warm = ingest.run_wrk(b.url, n, args.conns, 1)
                _settle(url)
                r = ingest.run_wrk(b.url, n, args.conns, args.seconds, b.pid)
                _settle(url)
            _, missing = ingest.missing_events(url, [warm, r])
        out.append([rnd, kind, n, v.name, f"{r.events_per_s:.0f}", f"{r.p50_ms:.1f}",
                    f"{r.p99_ms:.1f}", f"{r.cpu_ms:.2f}",
                    f"{r.events_per_s / ceil.events_per_s:.2f}",
                    f"{r.p99_ms / ceil.p99_ms:.1f}x", missing])  # fmt: skip
    return out


def _ceiling(
    dbs: world.Databases, kind: str, workdir: Path, v: Variant, n: int, args: argparse.Namespace
) -> ingest.WrkResult:
    """The durable ceiling from the variant's tree (its uvicorn settings), on a fresh database."""
    with dbs.fresh(kind) as url:
        argv = [str(procs.BIN / "python"), "-m", "benchmarks.ceiling", "{port}", url]
        env = {"PYTHONPATH": str(v.source), "OKTA_HOOK_SECRET": procs.OKTA_SECRET}
        with running(procs.Proc(argv, env, workdir, f"durable-{v.name}"), "/healthz") as d:
            ingest.run_wrk(d.url, n, args.conns, 1)  # warm-up
            return ingest.run_wrk(d.url, n, args.conns, args.seconds, d.pid)


if __name__ == "__main__":
    sys.exit(main())
