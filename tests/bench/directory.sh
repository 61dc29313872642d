#!/usr/bin/env bash
# Directory figures: authentications per second and lookup latency (p50,
# p99) against a private slapd on loopback, through the cache and without
# it, next to the same search done by ldapsearch, and on the embedded
# directory. Needs slapd and ldap-utils (tests/run installs them).
#   tests/bench/directory.sh [USERS]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release --locked -q -p epistle-tests --bin dirbench -- "${1:-1000}"
