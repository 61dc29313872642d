#!/usr/bin/env python3
"""Supervision figures (a benchmark, not a test):

  * time from `start-msg` to every started service accepting connections;
  * time from SIGKILL of a daemon to the daemon serving again.

Each is the median of 5 runs on a throw-away installation in a temporary
directory, built from release programs, with the test tree's stand-in
daemon in place of imapd and popd until the real ones exist.

    tests/bench/supervision.py [--runs N]
"""
import argparse, os, signal, socket, statistics, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greets(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(1)
            return s.recv(64) != b""
    except OSError:
        return False


def wait(cond, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    raise SystemExit("timed out")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    subprocess.run(["cargo", "build", "--release", "--bins", "--locked", "-q"], cwd=REPO, check=True)
    tmp = tempfile.mkdtemp(prefix="epistle-bench-")
    base, data = os.path.join(tmp, "base"), os.path.join(tmp, "data")
    subprocess.run(["bash", f"{REPO}/install/install.sh", "--no-build", "--prefix", base,
                    "--bindir", f"{REPO}/target/release"], check=True, stdout=subprocess.DEVNULL)
    for prog in ("imapd", "popd"):
        subprocess.run(["cp", f"{REPO}/target/release/standin", f"{base}/lib/{prog}"], check=True)
    imap, pop, watcher = free_port(), free_port(), free_port()
    import grp, pwd
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    state = os.path.join(tmp, "state")
    with open(state, "w") as f:
        f.write(f"""CONFIG_DATA_DIR = {data}
HOSTNAME = mail.example.com
SYSTEM_USER = {user}
SYSTEM_GROUP = {group}
POSTMASTER = pma@example.com
ADMIN_PASSWORD = benchmark-password
DEFAULT_DOMAIN = example.com
param.service.listenaddr = 127.0.0.1
param.service.imap.port = {imap}
param.service.imap.enablesslport = no
param.service.pop.port = {pop}
param.service.pop.enablesslport = no
param.local.watcher.port = {watcher}
param.local.autorestart.timeout = 1
""")
    sbin = lambda *a: subprocess.run([f"{base}/sbin/{a[0]}", *a[1:]], check=True,
                                     stdout=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "MSG_SVR_BASE"})
    sbin("configure", "-nodisplay", "-noconsole", "-state", state)
    pidfile = lambda svc: int(open(f"{data}/run/{svc}.pid").read())

    starts = []
    for _ in range(runs):
        t0 = time.monotonic()
        sbin("start-msg")
        wait(lambda: greets(imap) and greets(pop))
        starts.append(time.monotonic() - t0)
        sbin("stop-msg")

    sbin("start-msg")
    restarts = []
    for _ in range(runs):
        old = pidfile("imap")
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        def back():
            try:
                return pidfile("imap") != old and greets(imap)
            except (OSError, ValueError):
                return False
        wait(back)
        restarts.append(time.monotonic() - t0)
        time.sleep(1.2)  # past local.autorestart.timeout, so it is not given up
    sbin("stop-msg")
    subprocess.run(["rm", "-rf", tmp])

    ms = lambda xs: statistics.median(xs) * 1000
    print(f"start-msg to all services accepting (median of {runs}): {ms(starts):.1f} ms "
          f"(min {min(starts)*1000:.1f}, max {max(starts)*1000:.1f})")
    print(f"SIGKILL to serving again (median of {runs}): {ms(restarts):.1f} ms "
          f"(min {min(restarts)*1000:.1f}, max {max(restarts)*1000:.1f}); restart delay is 200 ms")


if __name__ == "__main__":
    sys.exit(main())
