#!/usr/bin/env bash
# Checks the shipped alerting files and exits non-zero on any failure:
#   1. promtool check rules  alerts/o365-mail-exporter.rules.yml       (syntax, every expression parses)
#   2. promtool test rules   alerts/o365-mail-exporter.rules.test.yml  (unit tests of every alert)
#   3. amtool check-config   alerts/alertmanager.example.yml
#   4. every alert of the rules file routes, in that example, to the receiver its severity calls for
# Needs promtool (Debian package prometheus) and amtool (prometheus-alertmanager):
# scripts/install-deps.sh installs both. tests/it/rules.rs runs this script under `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

RULES=alerts/o365-mail-exporter.rules.yml
TESTS=alerts/o365-mail-exporter.rules.test.yml
AM=alerts/alertmanager.example.yml

for tool in promtool amtool; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check-rules: '$tool' not found; run scripts/install-deps.sh (Debian packages prometheus and prometheus-alertmanager)" >&2
    exit 2
  fi
done

echo "== promtool check rules $RULES"
promtool check rules "$RULES"

echo "== promtool test rules $TESTS"
promtool test rules "$TESTS"

echo "== amtool check-config $AM"
amtool check-config "$AM"

echo "== routing of every alert in $AM"
# "alert severity" pairs; the rules file keeps `severity:` as the first label after `- alert:`.
pairs=$(awk '/^ *- alert: /{a=$3} /^ *severity: /{ if (a != "") { print a, $2; a = "" } }' "$RULES" | sort -u)
n=0
while read -r alert sev; do
  case "$sev" in
    page) want=pager ;;
    warning) want=chat-warnings ;;
    *) echo "check-rules: $alert has severity '$sev' (page or warning expected)" >&2; exit 1 ;;
  esac
  if ! amtool config routes test --config.file="$AM" --verify.receivers="$want" \
      alertname="$alert" severity="$sev" instance=ece-svc:10030 credential=c mailbox=m protocol=imap \
      >/dev/null 2>&1; then
    echo "check-rules: $alert (severity $sev) does not route to receiver $want" >&2
    exit 1
  fi
  echo "$alert ($sev) -> $want"
  n=$((n + 1))
done <<< "$pairs"
if [ "$n" -lt 10 ]; then
  echo "check-rules: only $n alerts found in $RULES" >&2
  exit 1
fi
echo "check-rules: all checks passed ($n alert/severity pairs routed)"
