#!/usr/bin/env bash
# Installs the Debian packages the tests and scripts use (chromium: the status page is checked in a
# real headless browser; tinyproxy: the outbound HTTP proxy tests), without starting any system service
# (a policy-rc.d that refuses to start daemons; the tests start their own instances on loopback).
set -euo pipefail

need=()
for bin in dovecot:dovecot-imapd /usr/lib/dovecot/pop3:dovecot-pop3d postfix:postfix \
           promtool:prometheus prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager \
           openssl:openssl curl:curl chromium:chromium tinyproxy:tinyproxy sed:sed; do
  cmd=${bin%%:*}; pkg=${bin##*:}
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$cmd" ]; then need+=("$pkg"); fi
done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${need[*]}" >&2
  exit 1
fi
echo "== installing Debian packages: ${need[*]}"
# Never start the distribution's own daemons (they would take ports 25/143/993/9090/8888...).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string localhost" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
