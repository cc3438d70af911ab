#!/bin/sh
# conntrack-zbx package steps, shared by the deb (postinst/prerm) and the rpm (%post/%preun).
#   configure       byte-compile; put the sudo grant in place, checked with visudo first; make
#                   every installed agent read the UserParameter file (conntrack-zbx agent-conf)
#   agent-conf      only the agent-conf step (the deb's trigger: an agent installed after us)
#   prerm upgrade   drop byte-code (configure of the new version compiles it again)
#   prerm remove    drop byte-code; remove the grant unless it was edited locally, and the links
# A broken file is never left in /etc/sudoers.d: the grant is written under a name sudo ignores
# (it contains a dot), checked alone and together with the whole policy, and only then renamed.
set -e
LIB=/usr/lib/conntrack-zbx
BIN="${CONNTRACK_ZBX_BIN:-/usr/bin/conntrack-zbx}"  # overridable for tests
SHIPPED="${CONNTRACK_ZBX_SHIPPED:-/usr/share/conntrack-zbx/sudoers}"  # overridable for tests
GRANT="${CONNTRACK_ZBX_GRANT:-/etc/sudoers.d/conntrack-zbx}"
STATE="${CONNTRACK_ZBX_STATE:-/var/lib/conntrack-zbx}"
say() { echo "conntrack-zbx: $*" >&2; }
sum() { sha256sum < "$1" | cut -d' ' -f1; }

unedited() {  # the grant in place is the one we put there (or absent)
  [ ! -e "$GRANT" ] && return 0
  [ -f "$STATE/sudoers.sha256" ] && [ "$(sum "$GRANT")" = "$(cat "$STATE/sudoers.sha256")" ] && return 0
  [ "$(sum "$GRANT")" = "$(sum "$SHIPPED")" ]
}

install_grant() {
  if ! command -v visudo >/dev/null 2>&1; then
    say "sudo is not installed: conntrack.stats works, the talker keys need sudo and the grant;"
    say "install sudo, then run: $0 configure"
    return 0
  fi
  if ! unedited; then
    say "kept the locally edited $GRANT; the packaged grant is $SHIPPED"
    return 0
  fi
  mkdir -p /etc/sudoers.d "$STATE"
  tmp="$GRANT.pkg-new"
  rm -f "$tmp"
  install -m 0440 -o root -g root "$SHIPPED" "$tmp"
  if ! visudo -cf "$tmp" >/dev/null; then
    rm -f "$tmp"
    say "visudo rejects the packaged grant; $GRANT left as it was"
    return 1
  fi
  # The whole policy must parse with ours in it, if it parsed before (a host may already carry a
  # file visudo complains about, e.g. a drop-in with loose permissions: not ours to judge).
  policy_ok=0
  visudo -c >/dev/null 2>&1 && policy_ok=1
  had=""
  [ -e "$GRANT" ] && had="$GRANT.pkg-old" && cp -p "$GRANT" "$had"
  mv -f "$tmp" "$GRANT"
  if [ "$policy_ok" = 1 ] && ! visudo -c >/dev/null 2>&1; then
    if [ -n "$had" ]; then mv -f "$had" "$GRANT"; else rm -f "$GRANT"; fi
    say "the sudo policy does not parse with the grant in it; $GRANT left as it was (check: visudo -c)"
    return 1
  fi
  [ -n "$had" ] && rm -f "$had"
  sum "$GRANT" > "$STATE/sudoers.sha256"
}

agent_conf() {
  # Debian's own zabbix-agent includes zabbix_agentd.conf.d/, not the zabbix_agentd.d/ we ship
  # into: link the file where each agent's stock Include points (never edit the agent's conf).
  if [ -x "$BIN" ]; then
    "$BIN" agent-conf --apply >&2 || say "could not place the agent conf: run $BIN agent-conf"
  fi
}

drop_bytecode() {
  find "$LIB" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
}

case "$1" in
  configure)
    python3 -m compileall -q "$LIB" >/dev/null 2>&1 || true
    install_grant
    agent_conf
    ;;
  agent-conf)
    agent_conf
    ;;
  prerm)
    drop_bytecode
    if [ "$2" = remove ]; then
      [ -x "$BIN" ] && { "$BIN" agent-conf --remove >/dev/null || true; }
      if unedited; then
        rm -f "$GRANT" "$STATE/sudoers.sha256"
        rmdir "$STATE" 2>/dev/null || true
      else
        say "kept the locally edited $GRANT (remove it by hand)"
      fi
    fi
    ;;
  *)
    say "usage: $0 configure | agent-conf | prerm upgrade|remove"
    exit 2
    ;;
esac
