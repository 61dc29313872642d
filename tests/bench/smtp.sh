#!/usr/bin/env bash
# SMTP figures, driven by Postfix's smtp-source: 4 KB messages accepted per
# second (each fsynced before its 250) with 1, 10 and 50 concurrent
# sessions, messages per second delivered end to end into the store, and
# the CPU time each message costs the machine (the load generator's own
# left out), which tells where a rate is bound by the cores.
# With --peer, the same load against Postfix delivering to Dovecot over
# LMTP (from Debian's packages, on loopback ports, private configuration
# directories), and the ratio.
#
#   tests/bench/smtp.sh [--peer] [MESSAGES]      (default 2000 per run)
#
# CONCURRENCY="10 50" picks the session counts; BINDIR=DIR takes the
# programs from DIR instead of building (to compare two builds); KEEP=1
# leaves the work directory. On ext4 without a journal, new files are
# slower to create for some minutes after many were deleted, so runs
# started right after another run's clean-up read low.
#
# Needs root for --peer (Postfix's master runs as root); installs postfix
# (for smtp-source) and, with --peer, dovecot-lmtpd when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
peer=0
if [ "${1:-}" = "--peer" ]; then peer=1; shift; fi
N=${1:-2000}
CONCURRENCY=(${CONCURRENCY:-1 10 50})

# need COMMAND-OR-PATH PACKAGE
need() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "$1" ] || {
    echo "installing $2 ..."
    # A stale package index names versions the mirror no longer has.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    }
  }
}
need smtp-source postfix
[ $peer = 1 ] && need /usr/lib/dovecot/lmtp dovecot-lmtpd

# free_ports N: N distinct free ports (all held open while chosen, so no
# two are the same).
free_ports() {
  python3 -c 'import socket,sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
now() { date +%s.%N; }
# The machine's busy CPU time so far, in ms (every process: servers,
# delivery, kernel work and the load generator; idle, I/O wait and time
# stolen by the hypervisor left out).
busy_ms() { awk '/^cpu /{print ($2+$3+$4+$7+$8) * 1000 / '"$(getconf CLK_TCK)"'; exit}' /proc/stat; }
rate() { python3 -c "import sys; print('%.0f' % (float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" "$@"; }

# Waits until count_fn prints at least $1; returns when it does.
wait_count() {
  local want=$1 fn=$2
  for _ in $(seq 1 6000); do
    [ "$($fn)" -ge "$want" ] && return 0
    sleep 0.2
  done
  echo "timed out waiting for $want deliveries" >&2
  return 1
}

# Waits until an SMTP greeting comes from 127.0.0.1:$1.
wait_greeting() {
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2); sys.exit(0 if s.recv(100).startswith(b'220') else 1)" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing answers on port $1" >&2
  return 1
}

# run NAME PORT COUNT_FN: one line per concurrency.
declare -A ACCEPT DELIVER CPU
run() {
  local name=$1 port=$2 fn=$3
  # Warm-up, not measured: server processes started, caches filled.
  local before
  before=$($fn)
  /usr/sbin/smtp-source -c -s 20 -m 500 -l 4096 -f load@example.org \
    -t joe@example.com "127.0.0.1:$port" >/dev/null 2>"$work/smtp-source.err" || {
    cat "$work/smtp-source.err" >&2; return 1; }
  wait_count $((before + 500)) "$fn"
  for c in "${CONCURRENCY[@]}"; do
    local before t0 t1 t2 cpu0 cpu2 load
    before=$($fn)
    cpu0=$(busy_ms)
    t0=$(now)
    # bash's `time` gives smtp-source's own CPU seconds (user, system).
    load=$( { TIMEFORMAT='%U %S'; time /usr/sbin/smtp-source -c -s "$c" -m "$N" -l 4096 \
      -f load@example.org -t joe@example.com "127.0.0.1:$port" >/dev/null; } 2>&1)
    t1=$(now)
    wait_count $((before + N)) "$fn"
    t2=$(now)
    cpu2=$(busy_ms)
    ACCEPT[$name,$c]=$(rate "$N" "$t0" "$t1")
    DELIVER[$name,$c]=$(rate "$N" "$t0" "$t2")
    # CPU per message to accept and deliver it, the load generator's
    # share taken out (the counting of deliveries costs a little too).
    CPU[$name,$c]=$(python3 -c "import sys; u, s = map(float, sys.argv[4].split()); print('%.2f' % ((float(sys.argv[2]) - float(sys.argv[1]) - (u + s) * 1000) / int(sys.argv[3])))" \
      "$cpu0" "$cpu2" "$N" "$load")
    printf '%-10s %4d sessions: %6s msg/s accepted, %6s msg/s delivered into the store, %5s ms CPU per message\n' \
      "$name" "$c" "${ACCEPT[$name,$c]}" "${DELIVER[$name,$c]}" "${CPU[$name,$c]}"
  done
}

bindir=${BINDIR:-target/release}
if [ -z "${BINDIR:-}" ]; then
  echo "building (release) ..."
  cargo build --release --locked -q --bins
fi
work=$(mktemp -d /var/tmp/epistle-smtpbench.XXXXXX)
chmod 755 "$work"
cleanup() {
  [ -x "$work/base/sbin/stop-msg" ] && "$work/base/sbin/stop-msg" -f >/dev/null 2>&1 || true
  [ -f "$work/postfix/main.cf" ] && postfix -c "$work/postfix" stop >/dev/null 2>&1 || true
  [ -f "$work/dovecot/dovecot.conf" ] && doveadm -c "$work/dovecot/dovecot.conf" stop >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# --- Epistle --------------------------------------------------------------
bash install/install.sh --no-build --prefix "$work/base" --bindir "$bindir" >/dev/null
read -r smtp sub smtps watcher_port <<<"$(free_ports 4)"
user=$(id -un); group=$(id -gn)
cat > "$work/state" <<STATE
CONFIG_DATA_DIR = $work/data
HOSTNAME = mail.example.com
COMPONENTS = mta,store
SYSTEM_USER = $user
SYSTEM_GROUP = $group
CONFIG_DIRECTORY = embedded
UG_DIRECTORY = embedded
UG_SUFFIX = o=usergroup
POSTMASTER = pma@example.com
ADMIN_PASSWORD = "bench password"
DEFAULT_DOMAIN = example.com
param.service.listenaddr = 127.0.0.1
param.service.imap.enable = no
param.service.pop.enable = no
param.service.http.enable = no
param.local.watcher.port = $watcher_port
STATE
"$work/base/sbin/configure" -nodisplay -noconsole -state "$work/state" >/dev/null
sed -i -e "s/^PORT=25\$/PORT=$smtp\nINTERFACE_ADDRESS=127.0.0.1/" \
  -e "s/^PORT=587\$/PORT=$sub\nINTERFACE_ADDRESS=127.0.0.1/" \
  -e "s/^TLS_PORT=465\$/TLS_PORT=$smtps/" "$work/base/config/dispatcher.cnf"
"$work/base/sbin/imsimta" cnbuild >/dev/null
"$work/base/sbin/commadmin" user create -D admin -w "bench password" -l joe -W joe -F Joe -L Bench >/dev/null
"$work/base/sbin/start-msg" >/dev/null
wait_greeting "$smtp"
epistle_count() {
  "$work/base/sbin/mboxutil" -l -p user/joe/INBOX 2>/dev/null \
    | sed -n 's/.*messages=\([0-9]*\).*/\1/p' | head -1 | grep . || echo 0
}
echo "Epistle: $N messages of 4 KB per run, to one local user"
run epistle "$smtp" epistle_count
"$work/base/sbin/stop-msg" >/dev/null || true

[ $peer = 1 ] || exit 0

# --- Postfix delivering to Dovecot over LMTP --------------------------------
pf=$work/postfix; dv=$work/dovecot; mail=$work/maildirs
mkdir -p "$pf" "$dv" "$mail" "$work/pfqueue" "$work/pfdata"
chown mail: "$mail"   # Dovecot delivers as a mail user, never as root
read -r lmtp_port pf_port <<<"$(free_ports 2)"
id dovenull >/dev/null 2>&1 || useradd --system dovenull
cat > "$dv/dovecot.conf" <<CONF
dovecot_config_version = 2.3.0
protocols = lmtp
base_dir = $dv/run
state_dir = $dv/state
log_path = $dv/dovecot.log
listen = 127.0.0.1
ssl = no
mail_location = maildir:$mail/%n
first_valid_uid = 1
first_valid_gid = 1
userdb {
  driver = static
  args = uid=$(id -u mail) gid=$(id -g mail) home=$mail/%n
}
passdb {
  driver = static
  args = nopassword=y
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp_port
  }
}
protocol lmtp {
  auth_username_format = %n
}
CONF
# Dovecot 2.3 takes the config above without the version line.
dovecot --version | grep -q '^2\.3' && sed -i '/^dovecot_config_version/d' "$dv/dovecot.conf"
dovecot -c "$dv/dovecot.conf"
cp /etc/postfix/master.cf "$pf/master.cf"
sed -i "s/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:$pf_port inet n - n - - smtpd/" "$pf/master.cf"
cat > "$pf/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $work/pfqueue
data_directory = $work/pfdata
myhostname = peer.example.com
mydomain = example.com
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = example.com
virtual_transport = lmtp:inet:127.0.0.1:$lmtp_port
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
maillog_file_prefixes = $work
maillog_file = $work/postfix.log
CONF
chown postfix: "$work/pfdata"
postfix -c "$pf" check >/dev/null 2>&1 || true
postfix -c "$pf" start >/dev/null || {
  echo "Postfix did not start; see $work/postfix.log" >&2
  cat "$work/postfix.log" >&2 || true
  exit 1
}
wait_greeting "$pf_port"
peer_count() { { find "$mail/joe" -type f -path '*/new/*' 2>/dev/null || true; } | wc -l; }
echo "Postfix -> Dovecot LMTP: $N messages of 4 KB per run, to one user"
run postfix "$pf_port" peer_count
echo
for c in "${CONCURRENCY[@]}"; do
  printf '%4d sessions: accepted %.1fx, delivered %.1fx, CPU per message %.2fx (Epistle / Postfix+Dovecot)\n' "$c" \
    "$(python3 -c "print(${ACCEPT[epistle,$c]} / ${ACCEPT[postfix,$c]})")" \
    "$(python3 -c "print(${DELIVER[epistle,$c]} / ${DELIVER[postfix,$c]})")" \
    "$(python3 -c "print(${CPU[epistle,$c]} / ${CPU[postfix,$c]})")"
done
