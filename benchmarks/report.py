"""The table `make bench` prints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Cells = Callable[[dict[str, Any]], list[Any]]


def _row(cells: list[Any], widths: list[int]) -> str:
    return "  ".join(
        str(c).rjust(w) if i else str(c).ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    return [_row(head, widths), _row(["-" * w for w in widths], widths)] + [
        _row(r, widths) for r in rows
    ]


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


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
        out += ["", "1. Ingest: Okta hook POSTs under wrk (closed loop), events/s and ack latency"]
        head = ["ev/req", "conns", "ceiling ev/s", "p50 ms", "p99 ms"]
        for kind in kinds:
            head += [f"{kind} ev/s", "p50 ms", "p99 ms", "ratio"]
        rows = []
        for i, bare in enumerate(results["ceiling"]):
            row = [bare.events, bare.connections, f"{bare.events_per_s:.0f}",
                   f"{bare.p50_ms:.1f}", f"{bare.p99_ms:.1f}"]  # fmt: skip
            for kind in kinds:
                r = results[kind]["ingest"]["sweep"][i]
                row += [f"{r.events_per_s:.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
                        f"{r.events_per_s / bare.events_per_s:.0%}"]  # fmt: skip
            rows.append(row)
        out += _table(head, rows)
        out += ["", "   Open loop at a fixed rate (latency counted from when each POST was due)"]
        rows = []
        for kind in kinds:
            ing = results[kind]["ingest"]
            for p in ing["paced"]:
                rows.append([kind, p.events, f"{p.rate:.0f}", f"{p.achieved:.0f}",
                             f"{p.p50_ms:.1f}", f"{p.p99_ms:.1f}", p.errors])  # fmt: skip
                if p.rate != 1000:
                    continue
                ok = p.p99_ms < 100 and not p.errors
                name = f"p99 ack < 100 ms at {p.rate:.0f} ev/s ({p.events} ev/req)"
                targets.append([name, kind, f"{p.p99_ms:.0f} ms", _mark(ok)])
            rows.append([kind, "durability", "", f"{ing['acked']} acked", "", "",
                         f"{ing['missing']} missing"])  # fmt: skip
            lost = f"{ing['missing']} of {ing['acked']} missing"
            targets.append(["every acked event durable", kind, lost, _mark(ing["missing"] == 0)])
            for size in sorted({b.events for b in results["ceiling"]}):
                best = max(r.events_per_s for r in ing["sweep"] if r.events == size)
                ceil = max(b.events_per_s for b in results["ceiling"] if b.events == size)
                targets.append([f"ingest >= 70% of ceiling ({size} ev/req, best of sweep)", kind,
                                f"{best / ceil:.0%}", _mark(best >= 0.7 * ceil)])  # fmt: skip
        out += _table(
            ["db", "ev/req", "asked ev/s", "acked ev/s", "p50 ms", "p99 ms", "errors"], rows
        )
    sections: list[tuple[str, str, list[str], Cells, Cells]] = [
        ("drain", "2. Drain: pending removals, one per user, COR stand-in at 20 ms",
         ["db", "jobs", "calls", "done", "detaches/s", "limit/s", "of limit"],
         lambda d: [d["jobs"], d["calls"], d["done"], f"{d['rate']:.0f}",
                    f"{d['limit']:.0f}", f"{d['rate'] / d['limit']:.0%}"],
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
         lambda d: [f"peak RSS < 150 MB at {d['pending']} pending", f"{d['hwm_mb']:.0f} MB",
                    d["hwm_mb"] < 150]),
    ]  # fmt: skip
    for key, title, head, cells, target in sections:
        rows = [[kind, *cells(results[kind][key])] for kind in kinds if key in results[kind]]
        if rows:
            out += ["", title, *_table(head, rows)]
        for kind in kinds:
            if key in results[kind]:
                name, value, ok = target(results[kind][key])
                targets.append([name, kind, value, _mark(ok)])
    out += ["", "Targets", *_table(["target", "db", "measured", ""], targets)]
    return "\n".join(out)
