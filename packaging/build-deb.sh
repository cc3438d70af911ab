#!/usr/bin/env bash
# make deb: build dist/conntrack-zbx_VERSION_all.deb from the checkout, offline (dpkg-deb only).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
version="$("${PYTHON:-/usr/bin/python3}" packaging/stage.py "$root")"
version="${VERSION:-$version}"
# Who answers for this build: $MAINTAINER, else the author of the commit being packaged.
maintainer="${MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || true)}"
maintainer="${maintainer:-conntrack_zbx developers <conntrack-zbx@localhost>}"
mkdir -p "$root/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<CONTROL
Package: conntrack-zbx
Version: $version
Architecture: all
Maintainer: $maintainer
Installed-Size: $size
Depends: python3 (>= 3.6)
Recommends: sudo, zabbix-agent | zabbix-agent2
Suggests: python3-pyzabbix, python3-yaml
Section: admin
Priority: optional
Description: Zabbix agent plugin: the Linux conntrack table filling up, and who fills it
 UserParameters for zabbix_agentd and zabbix_agent2 that report the connection-tracking
 table's usage, drops and the top talkers holding it, with the sudo grant the talker keys
 need, and the Zabbix template. Agent side: the system python3 only.
CONTROL
# md5sums of every shipped file but the conffiles (dpkg keeps theirs itself): `dpkg --verify`, debsums
(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
cat > "$root/DEBIAN/conffiles" <<CONFFILES
/etc/zabbix/zabbix_agentd.d/userparameter_conntrack.conf
/etc/zabbix/zabbix_agent2.d/userparameter_conntrack.conf
CONFFILES
cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
case "$1" in
  configure) /usr/share/conntrack-zbx/maintscript.sh configure ;;
  triggered) /usr/share/conntrack-zbx/maintscript.sh agent-conf ;;
esac
SCRIPT
# An agent installed (or upgraded) after this package: its files land under these paths, and
# dpkg then runs our postinst with "triggered", which puts the conf where that agent reads it.
cat > "$root/DEBIAN/triggers" <<TRIGGERS
interest-noawait /etc/zabbix
interest-noawait /usr/share/zabbix-agent
TRIGGERS
cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
case "$1" in
  remove|deconfigure) /usr/share/conntrack-zbx/maintscript.sh prerm remove ;;
  upgrade|failed-upgrade) /usr/share/conntrack-zbx/maintscript.sh prerm upgrade ;;
esac
SCRIPT
cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  rm -f /etc/sudoers.d/conntrack-zbx /etc/sudoers.d/conntrack-zbx.pkg-new
  rm -rf /var/lib/conntrack-zbx /run/conntrack-zbx
fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/conntrack-zbx_${version}_all.deb"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null
echo "$deb"
