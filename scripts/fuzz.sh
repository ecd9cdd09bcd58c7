#!/usr/bin/env bash
# Run every fuzz target for a fixed time each (default 60 s): scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs the nightly toolchain (rustup) and cargo-fuzz (installed from crates.io if missing).
# Crashes are kept under fuzz/artifacts/<target>/ and make the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
status=0
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  mkdir -p "corpus/$t"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536; then
    echo "!! $t found a crash (see fuzz/artifacts/$t)"
    status=1
  fi
done
exit $status
