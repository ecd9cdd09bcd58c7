#!/usr/bin/env bash
# The full test suite, as the README and CI run it. Installs what it needs (Debian packages
# for the real Dovecot, Postfix, Prometheus, Alertmanager and promtool), then runs formatting,
# lint and every test. Safe to re-run; needs root for apt-get and for Postfix.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
# lib, binaries and the integration tests; benches and examples are built by clippy above
# (criterion benches take no test-harness flags: they run with scripts/bench.sh)
cargo test --workspace --locked --lib --bins --tests -- --test-threads="${TEST_THREADS:-4}"
