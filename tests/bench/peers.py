"""What the access-server benchmarks share: an Epistle installation built
in release mode and configured on free loopback ports, Dovecot from
Debian's packages with a private configuration as the peer, a minimal IMAP
client, and process memory readings. Imported by imap.py and pop.py.
"""

import base64
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PASSWORD = "bench secret"


_given = set()


def free_port():
    """A free loopback port not handed out before (the kernel may offer a
    just-released port again)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p not in _given:
            _given.add(p)
            return p


def rss_kb(pid):
    """Proportional set size: shared pages split among the processes that
    share them, so a server forking a process per session is not charged
    its libraries once per process."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
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

    def append_many(self, mailbox, message, count):
        """Pipelined APPENDs with LITERAL+, a batch at a time."""
        batch = 500
        for i in range(0, count, batch):
            tags = set()
            data = b""
            for _ in range(min(batch, count - i)):
                self.n += 1
                tag = b"t%d" % self.n
                tags.add(tag)
                data += tag + b" APPEND %s {%d+}\r\n" % (mailbox.encode(), len(message)) + message + b"\r\n"
            self.s.sendall(data)
            while tags:
                line = self.f.readline()
                if not line:
                    raise EOFError("APPEND")
                tags.discard(line.split(b" ", 1)[0])

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
        self.hang_up()

    def hang_up(self):
        """Closes the connection (the file object holds the socket open
        until it is closed too)."""
        self.f.close()
        self.s.close()


def setup_epistle(work, params):
    """Builds, installs and starts Epistle under `work` with user joe;
    `params` are extra configutil parameters. Returns msg_svr_base/lib and
    the stop function."""
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "--bins"], cwd=REPO, check=True)
    base = os.path.join(work, "base")
    subprocess.run(
        ["bash", "install/install.sh", "--no-build", "--prefix", base, "--bindir", "target/release"],
        cwd=REPO, check=True, stdout=subprocess.DEVNULL,
    )
    user = pwd.getpwuid(os.geteuid())
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    state = os.path.join(work, "state")
    lines = [
        f"CONFIG_DATA_DIR = {work}/data", "HOSTNAME = mail.example.com", "COMPONENTS = mta,store",
        f"SYSTEM_USER = {user.pw_name}", f"SYSTEM_GROUP = {group}", "CONFIG_DIRECTORY = embedded",
        "UG_DIRECTORY = embedded", "UG_SUFFIX = o=usergroup", "POSTMASTER = pma@example.com",
        'ADMIN_PASSWORD = "bench password"', "DEFAULT_DOMAIN = example.com",
        "param.service.listenaddr = 127.0.0.1", "param.service.http.enable = no",
        f"param.local.watcher.port = {free_port()}", "param.local.imta.enable = no",
    ] + [f"param.{k} = {v}" for k, v in params.items()]
    with open(state, "w") as f:
        f.write("\n".join(lines) + "\n")
    sbin = os.path.join(base, "sbin")
    subprocess.run([f"{sbin}/configure", "-nodisplay", "-noconsole", "-state", state], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [f"{sbin}/commadmin", "user", "create", "-D", "admin", "-w", "bench password", "-l", "joe", "-W", PASSWORD, "-F", "Joe", "-L", "Bench"],
        check=True, stdout=subprocess.DEVNULL,
    )
    subprocess.run([f"{sbin}/start-msg"], check=True, stdout=subprocess.DEVNULL)
    lib = os.path.realpath(os.path.join(base, "lib"))
    return lib, lambda: subprocess.run([f"{sbin}/stop-msg"], stdout=subprocess.DEVNULL)


def epistle_password_hash(work):
    """joe's argon2id hash from the embedded directory, so that Dovecot
    checks the same password with the same cost."""
    for root, _, files in os.walk(work):
        if "directory.ldif" not in files:
            continue
        with open(os.path.join(root, "directory.ldif")) as f:
            text = f.read().replace("\n ", "")
        for block in text.split("\n\n"):
            lines = block.splitlines()
            if "uid: joe" not in lines:
                continue
            for line in lines:
                if line.startswith("userPassword::"):
                    h = base64.b64decode(line.split("::", 1)[1].strip()).decode()
                elif line.startswith("userPassword:"):
                    h = line.split(":", 1)[1].strip()
                else:
                    continue
                if h.startswith("{ARGON2}$argon2id$"):
                    return "{ARGON2ID}" + h[len("{ARGON2}"):]
    return None


def setup_dovecot(work, listeners, password_hash):
    """Starts Dovecot with maildir storage under `work`; `listeners` maps a
    protocol (imap, pop3) to its (plain port, TLS port). Returns the
    executables whose memory counts and the stop function. Its auth cache
    is on, as Epistle remembers verified logins by default
    (local.ugldap.authcachettl), so runs with a login per session compare
    like with like."""
    pkgs = {"imap": "dovecot-imapd", "pop3": "dovecot-pop3d"}
    missing = [pkgs[p] for p in listeners if not os.path.exists(f"/usr/lib/dovecot/{p}")]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing, check=True, env=env, stdout=subprocess.DEVNULL)
    dv = os.path.join(work, "dovecot")
    mail = os.path.join(work, "dovecot-mail")
    os.makedirs(dv)
    os.makedirs(mail)
    shutil.chown(mail, "mail", "mail")
    if subprocess.run(["id", "dovenull"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "dovenull"], check=True)
    cert, key = os.path.join(dv, "cert.pem"), os.path.join(dv, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=peer",
                    "-keyout", key, "-out", cert, "-days", "2"], check=True, capture_output=True)
    with open(os.path.join(dv, "passwd"), "w") as f:
        f.write(f"joe:{password_hash or '{PLAIN}' + PASSWORD}\n")
    if not password_hash:
        print("  (joe's argon2id hash not found: Dovecot checks a plain password)")
    mail_uid = pwd.getpwnam("mail")
    services = ""
    for proto, (port, sslport) in listeners.items():
        services += f"""service {proto}-login {{
  inet_listener {proto} {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener {proto}s {{
    address = 127.0.0.1
    port = {sslport}
    ssl = yes
  }}
  process_limit = 20000
  client_limit = 1
}}
service {proto} {{
  process_limit = 20000
}}
protocol {proto} {{
  mail_max_userip_connections = 100000
}}
"""
    conf = os.path.join(dv, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""protocols = {' '.join(listeners)}
base_dir = {dv}/run
state_dir = {dv}/state
log_path = {dv}/dovecot.log
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_cache_size = 10M
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
default_client_limit = 40000
default_vsz_limit = 0
{services}""")
    subprocess.run(["dovecot", "-c", conf], check=True)
    time.sleep(1)
    exes = [f"/usr/lib/dovecot/{p}" for p in listeners] + [f"/usr/lib/dovecot/{p}-login" for p in listeners]
    return exes, lambda: subprocess.run(["doveadm", "-c", conf, "stop"], capture_output=True)
