#!/usr/bin/env bash
# make rpm: build dist/conntrack-zbx-VERSION-1.noarch.rpm from the checkout, offline (rpmbuild).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v "${RPMBUILD:-rpmbuild}" >/dev/null 2>&1; then
  echo "make rpm needs rpmbuild: apt-get install rpm (Debian, Ubuntu) or dnf install rpm-build (RHEL, Fedora)" >&2
  exit 1
fi
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
version="$("${PYTHON:-/usr/bin/python3}" packaging/stage.py "$root")"
version="${VERSION:-$version}"
files="$(cd "$root" && find . -type f -o -type l | sed 's|^\.||' | sort | while read -r f; do
  case "$f" in
    /etc/*) echo "%config(noreplace) $f" ;;
    /usr/share/conntrack-zbx/sudoers) echo "%attr(0440,root,root) $f" ;;
    /usr/share/doc/conntrack-zbx/copyright) echo "%license $f" ;;
    *) echo "$f" ;;
  esac
done)"
dirs="$(cd "$root" && find ./usr/lib/conntrack-zbx ./usr/share/conntrack-zbx ./usr/share/doc/conntrack-zbx -type d | sed 's|^\.|%dir |' | sort)"
cat > "$work/conntrack-zbx.spec" <<SPEC
Name:           conntrack-zbx
Version:        $version
Release:        1
Summary:        Zabbix agent plugin: the Linux conntrack table filling up, and who fills it
License:        MIT
BuildArch:      noarch
Requires:       python3 >= 3.6
Recommends:     sudo
Suggests:       python3-pyzabbix, python3-pyyaml

%description
UserParameters for zabbix_agentd and zabbix_agent2 that report the connection-tracking
table's usage, drops and the top talkers holding it, with the sudo grant the talker keys
need, and the Zabbix template. Agent side: the system python3 only (3.6 and newer).

%install
cp -a $root/. %{buildroot}/

%post
/usr/share/conntrack-zbx/maintscript.sh configure

# an agent installed or upgraded after this package: put the conf where it reads it
%triggerin -- zabbix-agent, zabbix-agent2
/usr/share/conntrack-zbx/maintscript.sh agent-conf

%preun
if [ "\$1" -eq 0 ]; then
  /usr/share/conntrack-zbx/maintscript.sh prerm remove
else
  /usr/share/conntrack-zbx/maintscript.sh prerm upgrade
fi

%postun
if [ "\$1" -eq 0 ]; then
  rm -rf /var/lib/conntrack-zbx /run/conntrack-zbx
fi

%files
%defattr(-,root,root,-)
$dirs
$files
SPEC
"${RPMBUILD:-rpmbuild}" -bb --quiet --define "_topdir $work/rpm" --define "_rpmdir $out" --define "__os_install_post %{nil}" \
  --define "_build_id_links none" "$work/conntrack-zbx.spec" >/dev/null
ls "$out"/noarch/conntrack-zbx-"$version"-1.noarch.rpm
