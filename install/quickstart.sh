#!/usr/bin/env bash
# Quickstart: build, install, configure and start Epistle on this machine.
#
#   install/quickstart.sh [--prefix BASE] [--data DIR]
#
# As root: installs into /opt/epistle with data in /var/opt/epistle and the
# standard ports, running as the system user mailsrv:mail (created when
# missing). As another user: installs into ~/epistle with
# data in ~/epistle-data, runs as that user, and uses unprivileged ports
# (SMTP 2525, submission 1587, SMTPS 1465, IMAP 1143, POP 1110, HTTP 8080,
# IMAPS 1993, POP3S 1995, HTTPS 8443).
# The directory is the embedded one: no LDAP server is needed; a test
# account test@DOMAIN is created and its password printed. Run again,
# it upgrades the programs, keeps the configuration and restarts.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" = 0 ]; then
  prefix=/opt/epistle; data=/var/opt/epistle; user=mailsrv; group=mail
else
  prefix=$HOME/epistle; data=$HOME/epistle-data; user=$(id -un); group=$(id -gn)
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "quickstart.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

"$repo/install/install.sh" --prefix "$prefix"

# configure never creates system accounts; the quickstart does, saying so.
if [ "$(id -u)" = 0 ]; then
  if ! getent group "$group" >/dev/null; then
    echo "Creating system group $group"; groupadd --system "$group"
  fi
  if ! getent passwd "$user" >/dev/null; then
    echo "Creating system user $user"
    useradd --system -g "$group" -d "$data" -s /usr/sbin/nologin "$user"
  fi
fi

if [ -e "$prefix/config/msg.conf" ] || [ -e "$prefix/config/local.conf" ]; then
  echo "Already configured; restarting."
  "$prefix/sbin/stop-msg" || true
else
  host=$(hostname -f 2>/dev/null || hostname)
  case "$host" in *.*) ;; *) host="mail.example.test" ;; esac
  domain=${host#*.}
  case "$domain" in *.*) ;; *) domain="example.test" ;; esac
  password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  state=$(mktemp)
  trap 'rm -f "$state"' EXIT
  cat > "$state" <<STATE
CONFIG_DATA_DIR = $data
HOSTNAME = $host
COMPONENTS = mta,store,webmail
SYSTEM_USER = $user
SYSTEM_GROUP = $group
CONFIG_DIRECTORY = embedded
UG_DIRECTORY = embedded
POSTMASTER = pma@$domain
ADMIN_PASSWORD = $password
DEFAULT_DOMAIN = $domain
STATE
  if [ "$(id -u)" != 0 ]; then
    cat >> "$state" <<STATE
param.service.imap.port = 1143
param.service.imap.sslport = 1993
param.service.pop.port = 1110
param.service.pop.sslport = 1995
param.service.http.port = 8080
param.service.http.sslport = 8443
STATE
  fi
  "$prefix/sbin/configure" -nodisplay -noconsole -state "$state"
  if [ "$(id -u)" != 0 ]; then
    # SMTP 2525, submission 1587, SMTPS 1465: ports below 1024 need root.
    sed -i -e 's/^PORT=25$/PORT=2525/' -e 's/^PORT=587$/PORT=1587/' \
      -e 's/^TLS_PORT=465$/TLS_PORT=1465/' "$prefix/config/dispatcher.cnf"
    "$prefix/sbin/imsimta" cnbuild >/dev/null
  fi
  echo "Administrator: admin, password $password (also in $prefix/install/configure_*/saveState)"
  test_password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
  "$prefix/sbin/commadmin" user create -D admin -w "$password" -l test -W "$test_password" -F Test -L User >/dev/null
  echo "Test account: test@$domain, password $test_password"
fi

"$prefix/sbin/start-msg"
echo
"$prefix/sbin/status-msg" || true
cat <<EOF2

Epistle is running from $prefix (configuration and data in $data).
  status:     $prefix/sbin/status-msg
  settings:   $prefix/sbin/configutil -p service.
  stop:       $prefix/sbin/stop-msg
  logs:       $prefix/log/
Services whose programs are not built yet are listed as not installed.
EOF2
