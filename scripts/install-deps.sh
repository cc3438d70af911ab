#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need. Idempotent; quiet when all is present.
# Services are NOT started here (no systemd on these machines): policy-rc.d stops postinst from trying.
set -euo pipefail
# The host's own Zabbix packages serve the LTS its release ships (Debian 12: 6.0, Debian 13: 7.0);
# the lab runs the other one from a Debian root it builds with debootstrap (lab/debroot.py).
. /etc/os-release
case "${VERSION_CODENAME:-}" in
  bookworm|trixie) ;;
  *) echo "install-deps: Debian 12 (bookworm) or 13 (trixie) expected, this is ${PRETTY_NAME:-unknown}" >&2
     exit 1 ;;
esac
pkgs=(nftables iproute2 conntrack sudo zabbix-agent zabbix-agent2 zabbix-server-pgsql
      zabbix-frontend-php postgresql php-cli php-pgsql php-gd php-bcmath php-mbstring php-xml
      php-ldap locales python3-venv python3-pip procps time rpm debootstrap iptables
      chromium fonts-dejavu-core firewalld)
# chromium: the fleet dashboard checked in a real browser (lab/browser.py), headless;
# firewalld: protect's firewalld shape, run in a test's namespace only (never on the host's own)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ $had_policy = 0 ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $had_policy = 0 ] && rm -f /usr/sbin/policy-rc.d
fi
# chart2.php renders text only with this locale present.
if ! locale -a 2>/dev/null | grep -qi '^en_US.utf8$'; then
  sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
  locale-gen >/dev/null
fi
