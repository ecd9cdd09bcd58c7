#!/usr/bin/env bash
# Start the project's private mail stack for integration tests, all on 127.0.0.1:
#   Dovecot  IMAPS and POP3S (implicit TLS)
#   Postfix  submission with STARTTLS; SMTP AUTH answered by that Dovecot
# Logins take OAuth2 bearer tokens (SASL XOAUTH2 / OAUTHBEARER) that are JWTs, validated by
# Dovecot against keys in DIR/keys (no network): tokens minted by the fake identity provider
# (src/fake_idp) with DIR/idp/hs256.secret, or RS256 with DIR/idp/rs256.key.
#
# Usage:  start.sh DIR [IMAPS_PORT [POP3S_PORT [SUBMISSION_PORT]]]   (defaults 10993 10995 10587)
# Prints KEY=VALUE lines and writes them to DIR/stack.env:
#   STACK_DIR IMAPS_PORT POP3S_PORT SUBMISSION_PORT CA_FILE TENANT ISSUER AUDIENCE
#   HS256_SECRET_FILE RS256_KEY_FILE RS256_KID MAIL_USER MAIL_GROUP DOVECOT_PID
#   POSTFIX_MASTER_PID STARTUP_MS
# Stop with stop.sh [--fast] DIR; add messages with add-mail.sh DIR USER N.
#
# Needs root (Postfix's master refuses to run otherwise) and dovecot-imapd dovecot-pop3d postfix
# openssl (scripts/install-deps.sh). DIR and all its parents must be traversable by others
# (the daemons drop privileges): use /tmp, not /root. Environment knobs:
#   TENANT              tenant id; ISSUER defaults to https://sts.windows.net/$TENANT/
#   ISSUER, AUDIENCE    the accepted "iss" and the required "aud" (default https://outlook.office.com)
#   MAIL_USER/MAIL_GROUP owner of the mail files (default nobody/nogroup)
#   MAILSTACK_KEY_CACHE a directory to reuse the CA, server certificate and token keys from
#                       (saves ~1 s of RSA key generation per start); filled on first use
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TEMPLATES=$HERE/templates
RS256_KID=mailstack-rs256

usage() { echo "usage: $0 DIR [IMAPS_PORT [POP3S_PORT [SUBMISSION_PORT]]]" >&2; exit 2; }
if [ $# -lt 1 ] || [ $# -gt 4 ]; then usage; fi
mkdir -p "$1"
DIR=$(cd "$1" && pwd)            # absolute: the configs need absolute paths
IMAPS_PORT=${2:-10993}
POP3S_PORT=${3:-10995}
SUBMISSION_PORT=${4:-10587}
MAIL_USER=${MAIL_USER:-nobody}
MAIL_GROUP=${MAIL_GROUP:-nogroup}
TENANT=${TENANT:-00000000-0000-0000-0000-00000000beef}
ISSUER=${ISSUER:-https://sts.windows.net/$TENANT/}
AUDIENCE=${AUDIENCE:-https://outlook.office.com}

t0=$(date +%s%N)
log() { echo "start.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (Postfix's master refuses otherwise)"
for cmd in dovecot postfix openssl; do
    command -v "$cmd" >/dev/null || die "$cmd not found (run scripts/install-deps.sh)"
done
for v in "$ISSUER" "$AUDIENCE" "$DIR"; do
    case $v in *'|'*) die "'|' is not allowed in ISSUER, AUDIENCE or DIR (sed delimiter)";; esac
done
if [ -s "$DIR/run/dovecot.pid" ] && [ "$(cat "/proc/$(cat "$DIR/run/dovecot.pid")/comm" 2>/dev/null)" = dovecot ]; then
    die "a stack already runs in $DIR (run stop.sh $DIR first)"
fi
for port in "$IMAPS_PORT" "$POP3S_PORT" "$SUBMISSION_PORT"; do
    if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65535 ]; then
        die "bad port '$port'"
    fi
    # bash's /dev/tcp: a successful connect means someone already listens
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "127.0.0.1:$port is already in use"
    fi
done

# ------------------------------------------------------------------------------- layout --
# Dovecot reads the key dict as "dovecot", writes mail as $MAIL_USER; Postfix's smtpd ("postfix")
# opens Dovecot's auth socket. mktemp -d makes DIR 0700: add x for others (never remove bits).
chmod go+x "$DIR"
p=$(dirname "$DIR")
while [ "$p" != / ]; do
    [ "$(( 0$(stat -c %a "$p") & 01 ))" = 1 ] \
        || die "$p is not traversable by other users; put DIR elsewhere (e.g. under /tmp)"
    p=$(dirname "$p")
done
mkdir -p "$DIR"/{etc/postfix,log,run,state/dovecot,mail,tls,idp,postfix/spool,postfix/data}
mkdir -p "$DIR/keys/default/HS256" "$DIR/keys/default/RS256"
chmod 0755 "$DIR"/{etc,log,run,state,mail,tls,keys,postfix}
chmod 0700 "$DIR/idp"                     # signing secrets: the fake IdP's side only
chown "$MAIL_USER:$MAIL_GROUP" "$DIR/mail"
chown postfix:postfix "$DIR/postfix/data"

# ------------------------------------------------------------------- keys from the cache --
cache=${MAILSTACK_KEY_CACHE:-}
cache_fresh() {  # usable: complete and the certificates have > 10 of their 30 days left
    [ -n "$cache" ] && [ -s "$cache/tls/server.crt" ] && [ -s "$cache/tls/server.key" ] \
        && [ -s "$cache/tls/ca.crt" ] && [ -s "$cache/idp/hs256.secret" ] && [ -s "$cache/idp/rs256.key" ] \
        && [ -z "$(find "$cache/tls/server.crt" -mtime +20)" ]
}
if [ ! -s "$DIR/tls/server.crt" ] && cache_fresh; then
    cp -p "$cache/tls/ca.crt" "$cache/tls/server.crt" "$cache/tls/server.key" "$DIR/tls/"
    cp -p "$cache/idp/hs256.secret" "$cache/idp/rs256.key" "$DIR/idp/"
fi

# ------------------------------------------------------------------------------ TLS cert --
# A throw-away CA and a CA:FALSE server certificate for localhost and 127.0.0.1: rustls rejects a
# self-signed CA:TRUE certificate used as a server certificate (pitfall 9). Reused if present.
if [ ! -s "$DIR/tls/server.crt" ]; then
    (
        cd "$DIR/tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -sha256 \
            -keyout ca.key -out ca.crt -subj "/CN=o365-mailstack test CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
            -subj "/CN=localhost" 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:localhost,IP:127.0.0.1" > server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 30 -sha256 -extfile server.ext -out server.crt 2>/dev/null
        rm -f server.csr server.ext ca.srl ca.key   # the CA signs nothing else
        chmod 0600 server.key
    )
fi

# --------------------------------------------------------------------- token signing keys --
# Dovecot looks a token's key up as keys/<azp|default>/<alg>/<kid|default>:
#   HS256: one shared secret, base64, tokens without kid -> keys/default/HS256/default
#   RS256: an RSA key pair, tokens with kid $RS256_KID  -> keys/default/RS256/$RS256_KID
if [ ! -s "$DIR/idp/hs256.secret" ]; then
    openssl rand -base64 32 > "$DIR/idp/hs256.secret"
fi
if [ ! -s "$DIR/idp/rs256.key" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/idp/rs256.key" 2>/dev/null
fi
chmod 0600 "$DIR/idp/hs256.secret" "$DIR/idp/rs256.key"
cp "$DIR/idp/hs256.secret" "$DIR/keys/default/HS256/default"
openssl pkey -in "$DIR/idp/rs256.key" -pubout -out "$DIR/keys/default/RS256/$RS256_KID" 2>/dev/null
chmod 0644 "$DIR/keys/default/HS256/default" "$DIR/keys/default/RS256/$RS256_KID"

# Fill the cache once (write a sibling, then rename: parallel starts never see half a cache).
if [ -n "$cache" ] && ! cache_fresh; then
    tmp=$(mktemp -d "$cache.tmp.XXXXXX")
    mkdir -p "$tmp/tls" "$tmp/idp"
    cp -p "$DIR/tls/ca.crt" "$DIR/tls/server.crt" "$DIR/tls/server.key" "$tmp/tls/"
    cp -p "$DIR/idp/hs256.secret" "$DIR/idp/rs256.key" "$tmp/idp/"
    rm -rf "$cache.old.$$"
    [ -e "$cache" ] && mv -T "$cache" "$cache.old.$$" 2>/dev/null || true
    mv -T "$tmp" "$cache" 2>/dev/null || rm -rf "$tmp"
    rm -rf "$cache.old.$$"
fi

# --------------------------------------------------------------------------- config files --
render() {  # render TEMPLATE OUTPUT: replace every @NAME@
    sed -e "s|@DIR@|$DIR|g" \
        -e "s|@IMAPS_PORT@|$IMAPS_PORT|g" \
        -e "s|@POP3S_PORT@|$POP3S_PORT|g" \
        -e "s|@SUBMISSION_PORT@|$SUBMISSION_PORT|g" \
        -e "s|@MAIL_UID@|$MAIL_USER|g" \
        -e "s|@MAIL_GID@|$MAIL_GROUP|g" \
        -e "s|@ISSUER@|$ISSUER|g" \
        -e "s|@AUDIENCE@|$AUDIENCE|g" \
        -e "s|@RS256_KID@|$RS256_KID|g" \
        "$1" > "$2"
    if grep -q '@[A-Z_0-9]*@' "$2"; then die "unrendered placeholder in $2"; fi
}
render "$TEMPLATES/dovecot.conf.in"             "$DIR/etc/dovecot.conf"
render "$TEMPLATES/dovecot-oauth2.conf.ext.in"  "$DIR/etc/dovecot-oauth2.conf.ext"
render "$TEMPLATES/postfix-main.cf.in"          "$DIR/etc/postfix/main.cf"
render "$TEMPLATES/postfix-master.cf.in"        "$DIR/etc/postfix/master.cf"
# Postfix re-reads a main.cf younger than ~2 s in 300 ms naps before starting ("cool down"),
# adding ~2 s to every start right after rendering (pitfall 2): backdate the files.
touch -d '-1 minute' "$DIR/etc/postfix/main.cf" "$DIR/etc/postfix/master.cf"

# ---------------------------------------------------------------------------------- start --
wait_for_port() {  # wait_for_port PORT NAME: poll up to 10 s
    for _ in $(seq 1 500); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.02
    done
    die "$2 did not listen on 127.0.0.1:$1 within 10 s (see $DIR/log)"
}

# On any failure from here on, take down whatever did start.
on_exit() {
    local rc=$?
    if [ "$rc" != 0 ]; then
        log "start-up failed; stopping what started"
        "$HERE/stop.sh" --fast "$DIR" >&2 || true
    fi
}
trap on_exit EXIT

# Both daemons write to files, never to our stdout/stderr: a caller reading start.sh's output
# through a pipe would otherwise wait for an EOF that never comes (pitfall 12).
dovecot -F -c "$DIR/etc/dovecot.conf" </dev/null >>"$DIR/log/dovecot.stdout" 2>&1 &
DOVECOT_PID=$!
echo "$DOVECOT_PID" > "$DIR/run/dovecot.pid"
wait_for_port "$IMAPS_PORT" dovecot
wait_for_port "$POP3S_PORT" dovecot
for _ in $(seq 1 500); do [ -S "$DIR/run/dovecot/auth-postfix" ] && break; sleep 0.02; done
[ -S "$DIR/run/dovecot/auth-postfix" ] || die "Dovecot's auth-postfix socket did not appear"

# 'postfix start' checks and creates the queue, then starts master, which detaches; its PID
# lands in spool/pid/master.pid.
postfix -c "$DIR/etc/postfix" start </dev/null >>"$DIR/log/postfix.stdout" 2>&1 \
    || die "postfix start failed; see $DIR/log/postfix.log and postfix.stdout"
wait_for_port "$SUBMISSION_PORT" postfix
POSTFIX_PID=$(tr -dc 0-9 < "$DIR/postfix/spool/pid/master.pid")

{
    echo "STACK_DIR=$DIR"
    echo "IMAPS_PORT=$IMAPS_PORT"
    echo "POP3S_PORT=$POP3S_PORT"
    echo "SUBMISSION_PORT=$SUBMISSION_PORT"
    echo "CA_FILE=$DIR/tls/ca.crt"
    echo "TENANT=$TENANT"
    echo "ISSUER=$ISSUER"
    echo "AUDIENCE=$AUDIENCE"
    echo "HS256_SECRET_FILE=$DIR/idp/hs256.secret"
    echo "RS256_KEY_FILE=$DIR/idp/rs256.key"
    echo "RS256_KID=$RS256_KID"
    echo "MAIL_USER=$MAIL_USER"
    echo "MAIL_GROUP=$MAIL_GROUP"
    echo "DOVECOT_PID=$DOVECOT_PID"
    echo "POSTFIX_MASTER_PID=$POSTFIX_PID"
    echo "STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))"
} > "$DIR/stack.env.tmp"
mv "$DIR/stack.env.tmp" "$DIR/stack.env"
cat "$DIR/stack.env"
