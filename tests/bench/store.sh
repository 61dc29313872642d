#!/usr/bin/env bash
# Store figures: durable 4 KB appends per second with 1 and 10 clients, the
# time to open a 100,000-message mailbox and fetch its index, and stored's
# RSS with 1,000 mailboxes open.
#   tests/bench/store.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -q --bins
exec target/release/storebench "${1:-100000}"
