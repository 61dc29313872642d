#!/usr/bin/env python3
"""POP3 figures (printed, never asserted): seconds to RETR every message of
a mailbox of N 4 KB messages with Python's poplib, in one session, plain
and over TLS (POP3S), and the rate in messages per second.

  tests/bench/pop.py [--peer] [--messages N] [--rounds R]

The mailbox is filled over IMAP (pipelined APPENDs). With --peer the same
runs against Dovecot's pop3d (Debian's dovecot-pop3d and dovecot-imapd,
installed when missing; private configuration on loopback ports; needs
root) and the ratio is printed. The best of R rounds counts.
"""

import argparse
import os
import poplib
import shutil
import ssl
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import PASSWORD, Conn, epistle_password_hash, free_port, setup_dovecot, setup_epistle  # noqa: E402

# A 4 KB message.
MESSAGE = (
    b"From: Bench <bench@example.org>\r\nTo: joe@example.com\r\n"
    b"Subject: benchmark message\r\nDate: Tue, 1 Dec 2026 03:00:00 +0000\r\n\r\n"
    + b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusm.\r\n" * 55
)


def retr_all(port, tls):
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        p = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=60)
    else:
        p = poplib.POP3("127.0.0.1", port, timeout=60)
    p.user("joe")
    p.pass_(PASSWORD)
    count, _ = p.stat()
    t0 = time.time()
    octets = 0
    for n in range(1, count + 1):
        _, lines, size = p.retr(n)
        octets += size
    secs = time.time() - t0
    p.quit()
    return count, secs, octets


def measure(name, imap_port, pop_ports, args):
    print(f"{name}:")
    c = Conn(imap_port)
    c.append_many("INBOX", MESSAGE, args.messages)
    c.close()
    figures = {}
    for kind, port, tls in (("plain", pop_ports[0], False), ("TLS", pop_ports[1], True)):
        best = None
        for _ in range(args.rounds):
            count, secs, octets = retr_all(port, tls)
            if best is None or secs < best[1]:
                best = (count, secs, octets)
        count, secs, octets = best
        figures[kind] = count / secs
        print(f"  RETR of {count} messages ({octets / 1e6:.1f} MB), {kind}: {secs:.2f} s, {count / secs:.0f} msg/s")
    return figures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", action="store_true")
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="epistle-popbench.", dir="/var/tmp")
    os.chmod(work, 0o755)
    stops = []
    try:
        imap_port, pop_ports = free_port(), (free_port(), free_port())
        lib, stop = setup_epistle(work, {
            "service.imap.port": imap_port, "service.imap.enablesslport": "no",
            "service.pop.port": pop_ports[0], "service.pop.sslport": pop_ports[1],
        })
        stops.append(stop)
        ours = measure("Epistle", imap_port, pop_ports, args)
        stop()
        if not args.peer:
            return
        imap_port, pop_ports = free_port(), (free_port(), free_port())
        _, stop = setup_dovecot(work, {"imap": (imap_port, free_port()), "pop3": pop_ports},
                                epistle_password_hash(work))
        stops.append(stop)
        peer = measure("Dovecot", imap_port, pop_ports, args)
        print()
        for kind, rate in ours.items():
            print(f"RETR rate, {kind}: {rate:.0f} vs {peer[kind]:.0f} msg/s ({rate / peer[kind]:.1f}x)")
    finally:
        for s in stops:
            s()
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
