#!/usr/bin/env bash
# Deliver N small test messages into USER's INBOX of the mail stack in DIR, the way a local
# delivery agent would: write to Maildir/tmp, then rename into Maildir/new (atomic, so Dovecot
# never sees half a message). Login probes then see the count (IMAP STATUS/EXAMINE, POP3 STAT).
#
# Usage:  add-mail.sh DIR USER N        e.g. add-mail.sh /tmp/stack alice@example.test 3
# Prints the user's new message total. Works while the stack runs (Dovecot picks new/ up on
# the next SELECT/STAT) or before the first login.
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 DIR USER N" >&2; exit 2; }
DIR=$(cd "$1" && pwd)
USER_ADDR=$2
N=$3
[[ $N =~ ^[0-9]+$ ]] || { echo "add-mail.sh: N must be a number" >&2; exit 2; }
[ -s "$DIR/stack.env" ] || { echo "add-mail.sh: $DIR/stack.env missing (run start.sh first)" >&2; exit 1; }
case $USER_ADDR in */*|.*|'') echo "add-mail.sh: bad user '$USER_ADDR'" >&2; exit 2;; esac
MAIL_USER=$(sed -n 's/^MAIL_USER=//p' "$DIR/stack.env")
MAIL_GROUP=$(sed -n 's/^MAIL_GROUP=//p' "$DIR/stack.env")

# Dovecot's userdb home is DIR/mail/%Lu: the login name lowercased.
home="$DIR/mail/${USER_ADDR,,}"
md="$home/Maildir"
mkdir -p "$md/cur" "$md/new" "$md/tmp"
host=$(hostname 2>/dev/null || echo localhost)
for i in $(seq 1 "$N"); do
    name="$(date +%s).M$(date +%N)P$$Q$i.$host"
    {
        printf 'Return-Path: <sender@example.test>\r\n'
        printf 'From: Test Sender <sender@example.test>\r\n'
        printf 'To: <%s>\r\n' "$USER_ADDR"
        printf 'Subject: test message %s\r\n' "$i"
        printf 'Date: %s\r\n' "$(date -R)"
        printf 'Message-ID: <%s@o365-mailstack.test>\r\n' "$name"
        printf '\r\n'
        printf 'Test message %s for %s, added by add-mail.sh.\r\n' "$i" "$USER_ADDR"
    } > "$md/tmp/$name"
    mv "$md/tmp/$name" "$md/new/$name"
done
chown -R "$MAIL_USER:$MAIL_GROUP" "$home"
find "$md/new" "$md/cur" -type f | wc -l
