#!/usr/bin/env bash
# A local demo of the whole chain, for a person to look at, on a machine without any Office 365
# tenant: the real mail stack (Dovecot IMAPS/POP3S, Postfix submission), the fake Microsoft
# identity provider, the exporter, Prometheus with the shipped alert rules, and Alertmanager with the
# shipped example routing (receivers pointed at a local sink that prints every notification).
# Everything listens on 127.0.0.1 only. Needs root (Postfix) and the packages of install-deps.sh.
#
#   scripts/demo.sh                 start everything, print the URLs, wait; Ctrl-C stops it all
#   scripts/demo.sh inject FAILURE  make the identity provider fail (refresh_token_expired,
#                                   invalid_client_secret, client_secret_expired, consent_required,
#                                   conditional_access, throttled, server_error, html_login_page, hang, ...)
#   scripts/demo.sh clear           identity provider answers normally again
#   scripts/demo.sh break-mailbox   make the mailbox "carol" unreadable (IMAP/POP3 logins fail)
#   scripts/demo.sh fix-mailbox     undo break-mailbox
#   scripts/demo.sh stop-mail       stop Dovecot and Postfix (endpoints and logins go down)
#
# By default Prometheus loads a copy of the rules with minutes scaled to seconds, so an alert
# fires within a minute or two; DEMO_REAL_TIMING=1 loads the shipped rules unchanged.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_FILE=/tmp/o365-demo.current
APP_ALICE=a11ce000-0000-4000-8000-000000000001
APP_CAROL=ca401000-0000-4000-8000-000000000002
IDP_PORT=${IDP_PORT:-18080}
EXPORTER_PORT=${EXPORTER_PORT:-10030}
PROM_PORT=${PROM_PORT:-19090}
AM_PORT=${AM_PORT:-19093}
SINK_PORT=${SINK_PORT:-19097}

control() {
  [ -f "$STATE_FILE" ] || { echo "no demo is running (start it with scripts/demo.sh)" >&2; exit 1; }
  # shellcheck disable=SC1090
  . "$STATE_FILE"
  case "$1" in
    inject)
      [ -n "${2:-}" ] || { echo "usage: $0 inject FAILURE" >&2; exit 2; }
      curl -fsS -X POST -H 'Content-Type: application/json' \
        --data "{\"failure\":\"$2\"}" "http://127.0.0.1:$IDP_PORT/_fake/inject"; echo ;;
    clear) curl -fsS -X POST "http://127.0.0.1:$IDP_PORT/_fake/clear"; echo ;;
    break-mailbox) chmod 000 "$DEMO_DIR/stack/mail/carol@example.test"; echo "carol's mailbox is unreadable now" ;;
    fix-mailbox) chmod 755 "$DEMO_DIR/stack/mail/carol@example.test"; echo "carol's mailbox is readable again" ;;
    stop-mail) "$ROOT/scripts/mailstack/stop.sh" --fast "$DEMO_DIR/stack"; echo "mail stack stopped" ;;
    *) echo "unknown command $1 (see the top of $0)" >&2; exit 2 ;;
  esac
}

if [ $# -gt 0 ]; then control "$@"; exit; fi

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: run as root (Postfix needs it)" >&2; exit 1; }
"$ROOT/scripts/install-deps.sh"
echo "== building"
(cd "$ROOT" && cargo build --quiet --bins)
BIN=$ROOT/target/debug

DEMO_DIR=$(mktemp -d /tmp/o365-demo.XXXXXX)
chmod 755 "$DEMO_DIR"
PIDS=()
cleanup() {
  echo; echo "== stopping"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$ROOT/scripts/mailstack/stop.sh" --fast "$DEMO_DIR/stack" >/dev/null 2>&1 || true
  rm -f "$STATE_FILE"
  echo "logs kept in $DEMO_DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
echo "DEMO_DIR=$DEMO_DIR" > "$STATE_FILE"
echo "IDP_PORT=$IDP_PORT" >> "$STATE_FILE"

echo "== mail stack"
"$ROOT/scripts/mailstack/start.sh" "$DEMO_DIR/stack" >"$DEMO_DIR/stack.log"
# shellcheck disable=SC1091
. "$DEMO_DIR/stack/stack.env"
"$ROOT/scripts/mailstack/add-mail.sh" "$DEMO_DIR/stack" alice@example.test 3 >/dev/null
"$ROOT/scripts/mailstack/add-mail.sh" "$DEMO_DIR/stack" carol@example.test 1 >/dev/null

echo "== fake identity provider"
cat > "$DEMO_DIR/idp.yaml" <<YAML
tenant: $TENANT
audience: $AUDIENCE
access_token_lifetime: 10m
apps:
  - client_id: $APP_ALICE
    secrets: [{ value: "demo-secret-alice" }]
    roles: [IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp]
    app_token_upn: alice@example.test
  - client_id: $APP_CAROL
    secrets: [{ value: "demo-secret-carol" }]
    roles: [IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp]
    app_token_upn: carol@example.test
YAML
"$BIN/o365-fake-idp" --listen "127.0.0.1:$IDP_PORT" --config "$DEMO_DIR/idp.yaml" \
  --hs256-secret-file "$HS256_SECRET_FILE" >"$DEMO_DIR/idp.out" 2>"$DEMO_DIR/idp.log" &
PIDS+=($!)

echo "== exporter"
umask 077
printf 'demo-secret-alice\n' > "$DEMO_DIR/alice.secret"
printf 'demo-secret-carol\n' > "$DEMO_DIR/carol.secret"
umask 022
cat > "$DEMO_DIR/exporter.yaml" <<YAML
defaults: {interval: 15s, timeout: 5s, jitter: 2s, login_interval: 15s, login_timeout: 10s}
state_dir: $DEMO_DIR/state
endpoints:
  - {name: login, host: 127.0.0.1, port: $IDP_PORT, tls: none}
  - {name: imap, host: 127.0.0.1, port: $IMAPS_PORT, tls: implicit, ca_file: $CA_FILE}
  - {name: pop3, host: 127.0.0.1, port: $POP3S_PORT, tls: implicit, ca_file: $CA_FILE}
  - {name: smtp, host: 127.0.0.1, port: $SUBMISSION_PORT, tls: starttls-smtp, ca_file: $CA_FILE}
servers:
  imap: {host: 127.0.0.1, port: $IMAPS_PORT, ca_file: $CA_FILE}
  pop3: {host: 127.0.0.1, port: $POP3S_PORT, ca_file: $CA_FILE}
  smtp: {host: 127.0.0.1, port: $SUBMISSION_PORT, ca_file: $CA_FILE}
credentials:
  - {name: app-alice, tenant: $TENANT, client_id: $APP_ALICE, grant: client_credentials,
     authority: "http://127.0.0.1:$IDP_PORT", client_secret_file: alice.secret, refresh_ahead: 9m}
  - {name: app-carol, tenant: $TENANT, client_id: $APP_CAROL, grant: client_credentials,
     authority: "http://127.0.0.1:$IDP_PORT", client_secret_file: carol.secret, refresh_ahead: 9m}
mailboxes:
  - {name: alice, address: alice@example.test, credential: app-alice, protocols: [imap, pop3, smtp]}
  - {name: carol, address: carol@example.test, credential: app-carol, protocols: [imap, pop3, smtp]}
YAML
"$BIN/o365-mail-exporter" --config.file "$DEMO_DIR/exporter.yaml" \
  --web.listen-address "127.0.0.1:$EXPORTER_PORT" 2>"$DEMO_DIR/exporter.log" &
PIDS+=($!)

echo "== webhook sink, Alertmanager, Prometheus"
python3 - "$SINK_PORT" >"$DEMO_DIR/notifications.log" 2>&1 <<'PY' &
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            msg = json.loads(body)
            for a in msg.get("alerts", []):
                print(f"[{msg.get('receiver')}] {a['status']}: {a['labels'].get('alertname')} "
                      f"{a['annotations'].get('summary', '')}", flush=True)
        except ValueError:
            print(body, flush=True)
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)
sed -e "s#http://127.0.0.1:9097/o365-mail-exporter/page#http://127.0.0.1:$SINK_PORT/page#" \
    -e "s#http://127.0.0.1:9098/o365-mail-exporter/warning#http://127.0.0.1:$SINK_PORT/warning#" \
    -e "s/group_wait: 30s/group_wait: 5s/" -e "s/group_interval: 5m/group_interval: 30s/" \
    "$ROOT/alerts/alertmanager.example.yml" > "$DEMO_DIR/alertmanager.yml"
prometheus-alertmanager --config.file="$DEMO_DIR/alertmanager.yml" --storage.path="$DEMO_DIR/am" \
  --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= 2>"$DEMO_DIR/alertmanager.log" &
PIDS+=($!)
RULES=$ROOT/alerts/o365-mail-exporter.rules.yml
if [ -z "${DEMO_REAL_TIMING:-}" ]; then
  sed -E 's/\[([0-9]+)m\]/[\1s]/g; s/for: ([0-9]+)m/for: \1s/; s/offset ([0-9]+)m/offset \1s/g; s/([0-9]+) \* 60\b/\1/g' \
    "$RULES" > "$DEMO_DIR/rules.yml"
  RULES=$DEMO_DIR/rules.yml
fi
cat > "$DEMO_DIR/prometheus.yml" <<YAML
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: [$RULES]
alerting:
  alertmanagers: [{static_configs: [{targets: ['127.0.0.1:$AM_PORT']}]}]
scrape_configs:
  - job_name: o365-mail-exporter
    static_configs: [{targets: ['127.0.0.1:$EXPORTER_PORT']}]
YAML
prometheus --config.file="$DEMO_DIR/prometheus.yml" --storage.tsdb.path="$DEMO_DIR/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" 2>"$DEMO_DIR/prometheus.log" &
PIDS+=($!)

for url in "http://127.0.0.1:$EXPORTER_PORT/-/healthy" "http://127.0.0.1:$PROM_PORT/-/ready" "http://127.0.0.1:$AM_PORT/-/ready"; do
  for _ in $(seq 1 100); do curl -fs -o /dev/null "$url" && break; sleep 0.2; done
done

cat <<TXT

The demo is running (everything on 127.0.0.1; files and logs in $DEMO_DIR):
  exporter status page   http://127.0.0.1:$EXPORTER_PORT/        metrics: /metrics
  Prometheus             http://127.0.0.1:$PROM_PORT/alerts   (rules: $RULES)
  Alertmanager           http://127.0.0.1:$AM_PORT/
  notifications          tail -f $DEMO_DIR/notifications.log

Break something from another terminal and watch the alert:
  $0 inject refresh_token_expired     # token refresh fails (AADSTS700082): pages
  $0 inject invalid_client_secret     # AADSTS7000215
  $0 clear                            # back to normal
  $0 break-mailbox / fix-mailbox      # carol's IMAP/POP3 logins fail
  $0 stop-mail                        # mail servers down: endpoints unreachable
  $BIN/o365-mail-exporter check --config.file $DEMO_DIR/exporter.yaml

Ctrl-C stops everything.
TXT
while true; do sleep 3600; done
