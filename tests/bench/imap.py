#!/usr/bin/env python3
"""IMAP figures (printed, never asserted):

  * memory: N authenticated sessions in IDLE, plain and over TLS; the PSS
    of imapd and stored per session beyond the baseline;
  * a mixed workload (SELECT, FETCH, STORE, SEARCH, APPEND, EXPUNGE) at 1,
    10 and 50 clients, in long-lived sessions and with a login per
    session: commands per second;
  * SELECT plus `UID FETCH 1:* (UID FLAGS)` on a large mailbox.

  tests/bench/imap.py [--peer] [--sessions N] [--big M] [--seconds S]

With --peer the same runs against Dovecot's imapd (Debian's dovecot-imapd,
installed when missing; private configuration on loopback ports; needs
root) and the ratio is printed.
"""

import argparse
import multiprocessing as mp
import os
import random
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import Conn, epistle_password_hash, free_port, pids_of, rss_kb, setup_dovecot, setup_epistle  # noqa: E402


MESSAGE = (
    b"From: Bench <bench@example.org>\r\nTo: joe@example.com\r\n"
    b"Subject: benchmark message\r\nDate: Tue, 1 Dec 2026 03:00:00 +0000\r\n\r\n"
    + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n" * 60
)


def workload(port, seconds, per_session, out):
    """One client: the mixed loop; puts the number of commands done."""
    random.seed(os.getpid())
    done = 0
    end = time.time() + seconds
    c = None
    while time.time() < end:
        if c is None:
            c = Conn(port)
            done += 1
        c.cmd("SELECT INBOX")
        c.cmd("FETCH 1:10 (FLAGS BODY.PEEK[HEADER])")
        c.cmd("STORE %d +FLAGS (\\Seen)" % random.randint(1, 20))
        c.cmd("SEARCH UNSEEN")
        c.cmd("APPEND INBOX (\\Deleted)", MESSAGE)
        c.cmd("EXPUNGE")
        done += 6
        if per_session:
            c.close()
            c = None
    if c:
        c.close()
    out.put(done)


def run_workload(port, clients, seconds, per_session):
    q = mp.Queue()
    procs = [mp.Process(target=workload, args=(port, seconds, per_session, q)) for _ in range(clients)]
    t0 = time.time()
    for p in procs:
        p.start()
    total = sum(q.get() for _ in procs)
    for p in procs:
        p.join()
    return total / (time.time() - t0)


def memory(port, tls_port, exes, n):
    """The memory each further session in IDLE costs: n sessions are
    opened first and stay open (so the server has grown its pools and
    tables, and nothing freed can be reused), then n more are measured."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 2 * n + 1000) if hard != resource.RLIM_INFINITY else 2 * n + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    if want < 2 * n + 100:
        n = max(1, (want - 100) // 2)
        print(f"  (descriptor limit {hard}: {n} sessions)")

    def open_idle(p, tls, count):
        out = []
        for _ in range(count):
            c = Conn(p, tls)
            c.cmd("SELECT INBOX")
            c.idle()
            out.append(c)
        return out

    figures = {}
    for kind, p in (("plain", port), ("TLS", tls_port)):
        if p is None:
            continue
        tls = kind == "TLS"
        first = open_idle(p, tls, n)
        time.sleep(2)
        before = {e: sum(rss_kb(x) for x in pids_of(e)) for e in exes}
        more = open_idle(p, tls, n)
        time.sleep(2)
        after = {e: sum(rss_kb(x) for x in pids_of(e)) for e in exes}
        per = sum(after[e] - before[e] for e in exes) / n
        figures[kind] = per
        print(
            f"  {n} more {kind} sessions in IDLE (after {n}): "
            + ", ".join(f"{os.path.basename(e)} +{(after[e] - before[e]) / 1024:.1f} MB" for e in exes)
            + f"; {per:.1f} kB per session",
            flush=True,
        )
        for c in first + more:
            c.hang_up()
        time.sleep(3)
    return figures


def big_mailbox(port, m):
    c = Conn(port)
    try:
        c.cmd("CREATE Big")
    except RuntimeError:
        pass
    c.append_many("Big", MESSAGE, m)
    c.close()
    c = Conn(port)
    t0 = time.time()
    c.cmd("SELECT Big")
    c.cmd("UID FETCH 1:* (UID FLAGS)")
    return time.time() - t0


def measure(name, port, sslport, exes, args):
    print(f"{name}:")
    seed = Conn(port)
    for _ in range(20):
        seed.cmd("APPEND INBOX", MESSAGE)
    seed.close()
    parts = args.parts.split(",")
    figures = {}
    if "memory" in parts:
        figures["memory"] = memory(port, sslport, exes, args.sessions)
    if "workload" in parts:
        for per_session in (False, True):
            kind = "login per session" if per_session else "long-lived sessions"
            for clients in (1, 10, 50):
                rate = run_workload(port, clients, args.seconds, per_session)
                figures[(kind, clients)] = rate
                print(f"  {kind}, {clients} clients: {rate:.0f} commands/s", flush=True)
    if "big" in parts:
        secs = big_mailbox(port, args.big)
        figures["big"] = secs
        print(f"  SELECT + UID FETCH 1:* (UID FLAGS) on {args.big} messages: {secs:.2f} s")
    return figures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", action="store_true")
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--parts", default="memory,workload,big",
                    help="which figures: memory, workload, big (comma-separated)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="epistle-imapbench.", dir="/var/tmp")
    os.chmod(work, 0o755)
    stops = []
    try:
        port, sslport = free_port(), free_port()
        lib, stop = setup_epistle(work, {
            "service.imap.port": port, "service.imap.sslport": sslport,
            "service.imap.maxsessions": 100000, "service.pop.enable": "no",
        })
        exes = [f"{lib}/imapd", f"{lib}/stored"]
        stops.append(stop)
        ours = measure("Epistle", port, sslport, exes, args)
        stop()
        if not args.peer:
            return
        port, sslport = free_port(), free_port()
        exes, stop = setup_dovecot(work, {"imap": (port, sslport)}, epistle_password_hash(work))
        stops.append(stop)
        peer = measure("Dovecot", port, sslport, exes, args)
        print()
        for k, v in ours.items():
            if k not in peer:
                continue
            if k == "memory":
                for t, kb in v.items():
                    print(f"memory per {t} session: {kb:.1f} kB vs {peer['memory'].get(t, 0):.1f} kB")
            elif k == "big":
                print(f"large mailbox: {v:.2f} s vs {peer['big']:.2f} s ({peer['big'] / v:.1f}x)")
            else:
                print(f"{k[0]}, {k[1]} clients: {v / peer[k]:.1f}x")
    finally:
        for s in stops:
            s()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
