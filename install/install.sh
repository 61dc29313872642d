#!/usr/bin/env bash
# Installs Epistle into msg_svr_base (default /opt/epistle) as
# install/manifest describes. Re-running it upgrades the programs in place
# (each file is replaced by rename, so a running daemon keeps its old copy)
# and never touches config, log or data.
#
#   install/install.sh [--prefix BASE] [--no-build] [--bindir DIR]
#
#   --prefix BASE   where to install (default /opt/epistle)
#   --no-build      do not run cargo; take the programs from --bindir
#   --bindir DIR    where the built programs are (default target/release)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/epistle
build=yes
bindir="$repo/target/release"

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --no-build) build=no; shift ;;
    --bindir) bindir=$2; shift 2 ;;
    --bindir=*) bindir=${1#*=}; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac

if [ "$build" = yes ]; then
  echo "Building release programs (cargo build --release) ..."
  (cd "$repo" && cargo build --release --bins --locked 2>&1 | tail -n 3) || {
    echo "install.sh: the build failed" >&2; exit 1; }
  bindir="$repo/target/release"
fi

root=no
[ "$(id -u)" = 0 ] && root=yes

# own PATH OWNER GROUP MODE: set mode, and ownership when running as root.
own() {
  chmod "$4" "$1"
  if [ "$root" = yes ]; then chown "$2:$3" "$1"; fi
}

# put SRC DEST: copy to a temporary name beside DEST, then rename over it.
put() {
  local tmp
  tmp="$(dirname "$2")/.$(basename "$2").new.$$"
  cp "$1" "$tmp"
  mv -f "$tmp" "$2"
}

mkdir -p "$prefix"
while read -r type path source owner group mode; do
  case "$type" in ''|'#'*) continue ;; esac
  dest="$prefix/$path"
  case "$type" in
    d)
      mkdir -p "$dest"
      own "$dest" "$owner" "$group" "$mode" ;;
    f)
      case "$source" in
        bin:*) src="$bindir/${source#bin:}" ;;
        repo:*) src="$repo/${source#repo:}" ;;
        *) echo "install.sh: bad source $source in the manifest" >&2; exit 1 ;;
      esac
      [ -f "$src" ] || { echo "install.sh: $src is missing (build first, or give --bindir)" >&2; exit 1; }
      put "$src" "$dest"
      own "$dest" "$owner" "$group" "$mode" ;;
    t)
      mkdir -p "$dest"
      for src in "$repo/${source#repo:}"/*; do
        [ -f "$src" ] || continue
        put "$src" "$dest/$(basename "$src")"
        own "$dest/$(basename "$src")" "$owner" "$group" "$mode"
      done ;;
    *) echo "install.sh: unknown type $type in the manifest" >&2; exit 1 ;;
  esac
done < "$repo/install/manifest"

echo "Installed Epistle in $prefix"
if [ -e "$prefix/config/msg.conf" ] || [ -e "$prefix/config/local.conf" ]; then
  echo "Kept the existing configuration; restart with $prefix/sbin/stop-msg && $prefix/sbin/start-msg"
else
  echo "Next: $prefix/sbin/configure"
fi
