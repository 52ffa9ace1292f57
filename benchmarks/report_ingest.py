"""Section 1 of the table `make bench` prints: ingest, the bridge beside its ceilings."""

from __future__ import annotations

from typing import Any

from benchmarks.tables import mark, table

TARGET_CONNS = 32  # the p99 and throughput targets are read at this many connections


def ingest_section(results: dict[str, Any], kinds: list[str]) -> tuple[list[str], list[list[Any]]]:
    """(lines, target rows)."""
    out = ["", "1. Ingest: Okta hook POSTs under wrk (closed loop), events/s and ack latency",
           "   bare ceiling: FastAPI, same JSON, stores nothing"]  # fmt: skip
    out += table(
        ["ev/req", "conns", "bare ev/s", "p50 ms", "p99 ms"],
        [[b.events, b.connections, f"{b.events_per_s:.0f}", f"{b.p50_ms:.1f}", f"{b.p99_ms:.1f}"]
         for b in results["ceiling"]],
    )  # fmt: skip
    out += ["", "   durable ceiling (a row per event, group commit, fsync) beside the bridge, "
            "run after run on the same engine; ratio = bridge / durable; cpu = the server's "
            "CPU ms per delivery"]  # fmt: skip
    rows, targets = [], []
    for kind in kinds:
        ing = results[kind].get("ingest")
        if not ing:
            continue
        for d, r in zip(ing["durable"], ing["sweep"], strict=True):
            rows.append([kind, r.events, r.connections, f"{d.events_per_s:.0f}",
                         f"{d.p50_ms:.1f}", f"{d.p99_ms:.1f}", f"{d.cpu_ms:.2f}",
                         f"{r.events_per_s:.0f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
                         f"{r.cpu_ms:.2f}", f"{r.events_per_s / d.events_per_s:.2f}",
                         f"{r.p99_ms / d.p99_ms:.1f}x"])  # fmt: skip
        targets += _ingest_targets(kind, ing)
    out += table(["db", "ev/req", "conns", "durable ev/s", "p50 ms", "p99 ms", "cpu",
                  "bridge ev/s", "p50 ms", "p99 ms", "cpu", "ratio", "p99 ratio"],
                 rows)  # fmt: skip
    out += ["", "   Open loop at a fixed rate (latency counted from when each POST was due)"]
    rows = []
    for kind in kinds:
        ing = results[kind].get("ingest")
        if not ing:
            continue
        for p in ing["paced"]:
            rows.append([kind, p.events, f"{p.rate:.0f}", f"{p.achieved:.0f}",
                         f"{p.p50_ms:.1f}", f"{p.p99_ms:.1f}", p.errors])  # fmt: skip
            if p.rate == 1000:
                ok = p.p99_ms < 100 and not p.errors
                name = f"p99 ack < 100 ms at {p.rate:.0f} ev/s ({p.events} ev/req)"
                targets.append([name, kind, f"{p.p99_ms:.0f} ms", mark(ok)])
        rows.append([kind, "durability", "", f"{ing['acked']} acked", "", "",
                     f"{ing['missing']} missing"])  # fmt: skip
        lost = f"{ing['missing']} of {ing['acked']} missing"
        targets.append(["every acked event durable", kind, lost, mark(ing["missing"] == 0)])
    out += table(["db", "ev/req", "asked ev/s", "acked ev/s", "p50 ms", "p99 ms", "errors"], rows)
    return out, targets


def _ingest_targets(kind: str, ing: dict[str, Any]) -> list[list[Any]]:
    targets = []
    pairs = list(zip(ing["durable"], ing["sweep"], strict=True))
    for size in sorted({r.events for r in ing["sweep"]}):
        at = [(d, r) for d, r in pairs if r.events == size and r.connections == TARGET_CONNS]
        if at:
            d, r = at[0]
            ratio = r.events_per_s / d.events_per_s
            targets.append([f"ingest >= 0.5 of durable ceiling ({size} ev/req, "
                            f"{TARGET_CONNS} conns)", kind, f"{ratio:.2f}",
                            mark(ratio >= 0.5)])  # fmt: skip
            slower = r.p99_ms / d.p99_ms
            targets.append([f"p99 ack within 2x durable's ({size} ev/req, {TARGET_CONNS} conns)",
                            kind, f"{r.p99_ms:.0f} ms ({slower:.1f}x)",
                            mark(slower <= 2)])  # fmt: skip
        best = max(r.events_per_s for d, r in pairs if r.events == size)
        ceil = max(d.events_per_s for d, r in pairs if d.events == size)
        targets.append([f"best of sweep / best durable ({size} ev/req)", kind,
                        f"{best / ceil:.2f}", mark(best >= 0.5 * ceil)])  # fmt: skip
    return targets
