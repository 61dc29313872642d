#!/usr/bin/env python3
"""IMAP figures (printed, never asserted):

  * memory: N authenticated sessions in IDLE, plain and over TLS; the RSS
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
import pwd
import random
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PASSWORD = "bench secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pids_of(exe):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/exe") == exe:
                    out.append(int(p))
            except OSError:
                pass
    return out


class Conn:
    """A minimal IMAP client: raw lines, tagged commands."""

    def __init__(self, port, tls=False, user="joe"):
        s = socket.create_connection(("127.0.0.1", port), 30)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
        self.s = s
        self.f = s.makefile("rb")
        self.n = 0
        self.f.readline()
        self.cmd(f'LOGIN {user} "{PASSWORD}"')

    def cmd(self, text, literal=None):
        self.n += 1
        tag = b"t%d" % self.n
        data = tag + b" " + text.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.s.sendall(data + b"\r\n")
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError(text)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text}: {line!r}")
                return
            # Literals in answers: skip their bytes.
            if line.rstrip().endswith(b"}") and b"{" in line:
                size = int(line.rsplit(b"{", 1)[1].rstrip(b"}\r\n"))
                self.f.read(size)

    def idle(self):
        self.n += 1
        self.s.sendall(b"t%d IDLE\r\n" % self.n)
        line = self.f.readline()
        assert line.startswith(b"+"), line

    def close(self):
        try:
            self.s.sendall(b"z LOGOUT\r\n")
        except OSError:
            pass
        self.s.close()


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
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 2 * n + 1000) if hard != resource.RLIM_INFINITY else 2 * n + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    if want < 2 * n + 100:
        n = max(1, (want - 100) // 2)
        print(f"  (descriptor limit {hard}: {n} sessions)")
    figures = {}
    for tls, p in (("plain", port), ("TLS", tls_port)):
        if p is None:
            continue
        # Warm up with a full round first, so that the baseline already
        # holds the thread pools, allocator arenas and tables a server that
        # has had this many sessions keeps.
        if tls == "plain":
            warm = []
            for _ in range(n):
                c = Conn(p)
                c.cmd("SELECT INBOX")
                c.idle()
                warm.append(c)
            for c in warm:
                c.s.close()
            time.sleep(2)
        first = Conn(p, tls == "TLS")
        first.cmd("SELECT INBOX")
        first.idle()
        time.sleep(1)
        before = {e: sum(rss_kb(x) for x in pids_of(e)) for e in exes}
        conns = []
        for _ in range(n):
            c = Conn(p, tls == "TLS")
            c.cmd("SELECT INBOX")
            c.idle()
            conns.append(c)
        time.sleep(2)
        after = {e: sum(rss_kb(x) for x in pids_of(e)) for e in exes}
        per = sum(after[e] - before[e] for e in exes) / n
        figures[tls] = per
        print(
            f"  {n} {tls} sessions in IDLE: "
            + ", ".join(f"{os.path.basename(e)} +{(after[e] - before[e]) / 1024:.1f} MB" for e in exes)
            + f"; {per:.1f} kB per session"
        )
        for c in conns + [first]:
            c.s.close()
        time.sleep(2)
    return figures


def big_mailbox(port, m):
    c = Conn(port)
    try:
        c.cmd("CREATE Big")
    except RuntimeError:
        pass
    batch = 500
    for i in range(0, m, batch):
        # Pipelined appends with LITERAL+.
        tags = []
        data = b""
        for j in range(min(batch, m - i)):
            c.n += 1
            tag = b"t%d" % c.n
            tags.append(tag)
            data += tag + b" APPEND Big {%d+}\r\n" % len(MESSAGE) + MESSAGE + b"\r\n"
        c.s.sendall(data)
        left = set(tags)
        while left:
            line = c.f.readline()
            t = line.split(b" ", 1)[0]
            if t in left:
                left.discard(t)
    c.close()
    c = Conn(port)
    t0 = time.time()
    c.cmd("SELECT Big")
    c.cmd("UID FETCH 1:* (UID FLAGS)")
    return time.time() - t0


def setup_epistle(work):
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "--bins"], cwd=REPO, check=True)
    base = os.path.join(work, "base")
    subprocess.run(
        ["bash", "install/install.sh", "--no-build", "--prefix", base, "--bindir", "target/release"],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )
    port, sslport = free_port(), free_port()
    user = pwd.getpwuid(os.geteuid())
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    state = os.path.join(work, "state")
    with open(state, "w") as f:
        f.write(
            f"CONFIG_DATA_DIR = {work}/data\nHOSTNAME = mail.example.com\nCOMPONENTS = mta,store\n"
            f"SYSTEM_USER = {user.pw_name}\nSYSTEM_GROUP = {group}\nCONFIG_DIRECTORY = embedded\n"
            "UG_DIRECTORY = embedded\nUG_SUFFIX = o=usergroup\nPOSTMASTER = pma@example.com\n"
            'ADMIN_PASSWORD = "bench password"\nDEFAULT_DOMAIN = example.com\n'
            "param.service.listenaddr = 127.0.0.1\n"
            f"param.service.imap.port = {port}\nparam.service.imap.sslport = {sslport}\n"
            "param.service.pop.enable = no\nparam.service.http.enable = no\n"
            f"param.local.watcher.port = {free_port()}\nparam.service.imap.maxsessions = 100000\n"
            "param.local.imta.enable = no\n"
        )
    sbin = os.path.join(base, "sbin")
    subprocess.run([f"{sbin}/configure", "-nodisplay", "-noconsole", "-state", state], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [f"{sbin}/commadmin", "user", "create", "-D", "admin", "-w", "bench password", "-l", "joe", "-W", PASSWORD, "-F", "Joe", "-L", "Bench"],
        check=True, stdout=subprocess.DEVNULL,
    )
    subprocess.run([f"{sbin}/start-msg"], check=True, stdout=subprocess.DEVNULL)
    lib = os.path.realpath(os.path.join(base, "lib"))
    stop = lambda: subprocess.run([f"{sbin}/stop-msg"], stdout=subprocess.DEVNULL)
    return port, sslport, [f"{lib}/imapd", f"{lib}/stored"], stop


def epistle_password_hash(work):
    """joe's argon2id hash from the embedded directory, so that Dovecot
    checks the same password with the same cost."""
    import base64
    for root, _, files in os.walk(work):
        if "directory.ldif" in files:
            entry = []
            with open(os.path.join(root, "directory.ldif")) as f:
                text = f.read().replace("\n ", "")
            for block in text.split("\n\n"):
                lines = block.splitlines()
                if "uid: joe" not in lines:
                    continue
                for line in lines:
                    if line.startswith("userPassword::"):
                        entry.append(base64.b64decode(line.split("::", 1)[1].strip()).decode())
                    elif line.startswith("userPassword:"):
                        entry.append(line.split(":", 1)[1].strip())
            for h in entry:
                if h.startswith("{ARGON2}$argon2id$"):
                    return "{ARGON2ID}" + h[len("{ARGON2}"):]
    return None


def setup_dovecot(work, password_hash):
    if not os.path.exists("/usr/lib/dovecot/imap"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "dovecot-imapd"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)
    port, sslport = free_port(), free_port()
    dv = os.path.join(work, "dovecot")
    mail = os.path.join(work, "dovecot-mail")
    os.makedirs(dv)
    os.makedirs(mail)
    shutil.chown(mail, "mail", "mail")
    if subprocess.run(["id", "dovenull"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "dovenull"], check=True)
    certs = os.path.join(dv, "cert.pem"), os.path.join(dv, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=peer",
                    "-keyout", certs[1], "-out", certs[0], "-days", "2"], check=True, capture_output=True)
    mail_uid = pwd.getpwnam("mail")
    with open(os.path.join(dv, "dovecot.conf"), "w") as f:
        f.write(f"""protocols = imap
base_dir = {dv}/run
state_dir = {dv}/state
log_path = {dv}/dovecot.log
listen = 127.0.0.1
ssl = yes
ssl_cert = <{certs[0]}
ssl_key = <{certs[1]}
disable_plaintext_auth = no
mail_location = maildir:{mail}/%n
first_valid_uid = 1
first_valid_gid = 1
userdb {{
  driver = static
  args = uid={mail_uid.pw_uid} gid={mail_uid.pw_gid} home={mail}/%n
}}
passdb {{
  driver = passwd-file
  args = {dv}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {sslport}
    ssl = yes
  }}
  process_limit = 20000
  client_limit = 1
}}
service imap {{
  process_limit = 20000
}}
protocol imap {{
  mail_max_userip_connections = 100000
}}
default_client_limit = 40000
default_vsz_limit = 0
""")
    with open(os.path.join(dv, "passwd"), "w") as f:
        f.write(f"joe:{password_hash or '{PLAIN}' + PASSWORD}\n")
    if not password_hash:
        print("  (joe's argon2id hash not found: Dovecot checks a plain password)")
    conf = os.path.join(dv, "dovecot.conf")
    subprocess.run(["dovecot", "-c", conf], check=True)
    time.sleep(1)
    exes = ["/usr/lib/dovecot/imap", "/usr/lib/dovecot/imap-login"]
    stop = lambda: subprocess.run(["doveadm", "-c", conf, "stop"], capture_output=True)
    return port, sslport, exes, stop


def measure(name, port, sslport, exes, args):
    print(f"{name}:")
    seed = Conn(port)
    for _ in range(20):
        seed.cmd("APPEND INBOX", MESSAGE)
    seed.close()
    figures = {"memory": memory(port, sslport, exes, args.sessions)}
    for per_session in (False, True):
        kind = "login per session" if per_session else "long-lived sessions"
        for clients in (1, 10, 50):
            rate = run_workload(port, clients, args.seconds, per_session)
            figures[(kind, clients)] = rate
            print(f"  {kind}, {clients} clients: {rate:.0f} commands/s")
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
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="epistle-imapbench.", dir="/var/tmp")
    os.chmod(work, 0o755)
    stops = []
    try:
        port, sslport, exes, stop = setup_epistle(work)
        stops.append(stop)
        ours = measure("Epistle", port, sslport, exes, args)
        stop()
        if not args.peer:
            return
        port, sslport, exes, stop = setup_dovecot(work, epistle_password_hash(work))
        stops.append(stop)
        peer = measure("Dovecot", port, sslport, exes, args)
        print()
        for k, v in ours.items():
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
