"""The table `make bench` prints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.report_ingest import ingest_section
from benchmarks.tables import mark, table

Cells = Callable[[dict[str, Any]], list[Any]]


def render(results: dict[str, Any], kinds: list[str]) -> str:
    m = results["machine"]
    out = [
        "",
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}, "
        f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql'] or '-'}",
        "load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*m["load_before"])
        + ", after: {:.2f} {:.2f} {:.2f}".format(*m["load_after"])
        + f"; {results['minutes']} minutes",
    ]
    targets: list[list[Any]] = []
    if "ceiling" in results:
        lines, targets = ingest_section(results, kinds)
        out += lines
    sections: list[tuple[str, str, list[str], Cells, Cells]] = [
        ("replicas", "1b. Replicas on one PostgreSQL: Okta deliveries (1 event, 32 connections "
         "in all); mixed: two replicas take Okta's while a third takes 100-member SCIM PATCHes",
         ["db", "1 replica ev/s", "3 replicas ev/s", "3 / 1", "mixed ev/s", "mixed p99 ms",
          "mixed max ms", "PATCHes", "PATCH max ms", "missing"],
         lambda d: [f"{d['one']:.0f}", f"{d['three']:.0f}", f"{d['three'] / d['one']:.2f}",
                    f"{d['mixed_rate']:.0f}", f"{d['mixed_p99']:.0f}", f"{d['mixed_max']:.0f}",
                    d["patches"], f"{d['patch_max_ms']:.0f}", d["missing"]],
         lambda d: ["3 replicas ingest more than 1; Okta p99 < 1 s, max < 2 s beside SCIM",
                    f"{d['three'] / d['one']:.2f}x, {d['mixed_p99']:.0f}/{d['mixed_max']:.0f} ms",
                    d["three"] > d["one"] and d["mixed_p99"] < 1000 and d["mixed_max"] < 2000
                    and d["missing"] == 0]),
        ("drain", "2. Drain: pending removals, one per user, COR stand-in at 20 ms",
         ["db", "jobs", "calls", "done", "detaches/s", "limit/s", "of limit",
          "stand-in alone /s (c, 4c conns)", "of stand-in"],
         lambda d: [d["jobs"], d["calls"], d["done"], f"{d['rate']:.0f}",
                    f"{d['limit']:.0f}", f"{d['rate'] / d['limit']:.0%}",
                    f"{d['standin']:.0f}, {d['standin_wide']:.0f}",
                    f"{d['rate'] / d['standin']:.0%}"],
         lambda d: ["drain >= 90% of concurrency / latency", f"{d['rate'] / d['limit']:.0%}",
                    d["rate"] >= 0.9 * d["limit"]]),
        ("coalesce", "3. Coalescing: removals of one user across groups, 50 per delivery",
         ["db", "removals", "groups", "delay s", "jobs", "detach calls", "send s"],
         lambda d: [d["removals"], d["groups"], d["delay"], d["jobs"], d["calls"],
                    f"{d['send_seconds']:.1f}"],
         lambda d: [f"{d['removals']} removals -> at most 5 calls", f"{d['calls']} calls",
                    d["calls"] <= 5]),
        ("coalesce_delay", "   ... with BRIDGE_DELIVERY_DELAY_SECONDS=2 (the grace period)",
         ["db", "removals", "groups", "delay s", "jobs", "detach calls", "send s"],
         lambda d: [d["removals"], d["groups"], d["delay"], d["jobs"], d["calls"],
                    f"{d['send_seconds']:.1f}"],
         lambda d: [f"{d['removals']} removals -> at most 5 calls (2 s delay)",
                    f"{d['calls']} calls", d["calls"] <= 5]),
        ("scim", "4. SCIM: Entra-style PATCH removing 100 members by value, one after another",
         ["db", "members", "PATCHes", "total s", "p50 ms", "p99 ms", "max ms", "jobs"],
         lambda d: [d["members"], d["patches"], f"{d['total']:.1f}", f"{d['p50_ms']:.0f}",
                    f"{d['p99_ms']:.0f}", f"{d['max_ms']:.0f}", d["jobs"]],
         lambda d: ["SCIM p99 < 200 ms per 100-member PATCH", f"{d['p99_ms']:.0f} ms",
                    d["p99_ms"] < 200]),
        ("scim_cycle", "4b. SCIM: Entra's initial cycle (filter + POST per user; groups, "
         "100-member PATCHes), one request after another",
         ["db", "users", "groups", "requests", "req/s", "p50 ms", "p99 ms", "first ms",
          "last ms", "GET first/last", "POST first/last", "bridge CPU ms/req first/last"],
         lambda d: [d["users"], d["groups"], d["requests"], f"{d['rate']:.0f}",
                    f"{d['p50_ms']:.1f}", f"{d['p99_ms']:.1f}", f"{d['first_ms']:.1f}",
                    f"{d['last_ms']:.1f}", "{:.1f}/{:.1f}".format(*d["lookup_ms"]),
                    "{:.1f}/{:.1f}".format(*d["create_ms"]),
                    "{:.2f}/{:.2f} ({:.2f}x)".format(*d["cpu_ms"], d["cpu_flat"])],
         lambda d: ["SCIM request time flat (last tenth <= 1.5x first)", f"{d['flat']:.2f}x",
                    d["flat"] <= 1.5]),
        ("memory", "5. Memory: bridge with pending rows, COR unreachable",
         ["db", "pending", "seconds", "jobs tried", "VmHWM MB", "VmRSS MB"],
         lambda d: [d["pending"], f"{d['seconds']:.0f}", d["tried"], f"{d['hwm_mb']:.0f}",
                    f"{d['rss_mb']:.0f}"],
         lambda d: [f"peak RSS < 120 MB at {d['pending']} pending", f"{d['hwm_mb']:.0f} MB",
                    d["hwm_mb"] < 120]),
    ]  # fmt: skip
    for key, title, head, cells, target in sections:
        rows = [[kind, *cells(results[kind][key])] for kind in kinds if key in results[kind]]
        if rows:
            out += ["", title, *table(head, rows)]
        for kind in kinds:
            if key in results[kind]:
                name, value, ok = target(results[kind][key])
                targets.append([name, kind, value, mark(ok)])
    out += ["", "Targets", *table(["target", "db", "measured", ""], targets)]
    return "\n".join([*out, "", _timing(results, kinds)])


def _timing(results: dict[str, Any], kinds: list[str]) -> str:
    """Where the run's minutes went (the budget is 12 for `make bench`)."""
    parts = [f"bare ceiling {results['ceiling_seconds']}"] if "ceiling_seconds" in results else []
    for kind in kinds:
        parts += [f"{kind} {name} {s}" for name, s in results[kind].get("seconds", {}).items()]
    return "seconds: " + ", ".join(parts)
