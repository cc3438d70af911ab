#!/usr/bin/env bash
# The agent side on every Python an agent host has: RHEL 8 / CentOS 7 (3.6), Debian 11 / RHEL 9
# era (3.8/3.9), current distributions (3.11, 3.13). Real interpreters from pyenv, each in its own
# venv with just pytest; the agent-side tests (parsers, fixture trees, --file, the CLI contract,
# cache, boot files, tune) run against the checkout. The admin side needs 3.8+ and is tested by
# the main suite.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${PYENV_ROOT:-}"
[ -n "$root" ] || root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
tests=(tests/test_parse_stat.py tests/test_parse_table.py tests/test_cli.py tests/test_netlink.py
       tests/test_boot.py tests/test_cache.py tests/test_corpus.py tests/test_tune.py)
for want in ${PYTHONS:-3.6 3.8 3.11 3.13}; do
  py="$(ls -d "$root"/versions/"$want".*/bin/python3 2>/dev/null | sort -V | tail -1 || true)"
  if [ -z "$py" ]; then
    echo "test-pythons: no Python $want under $root/versions: install it ('pyenv install $want')" >&2
    exit 1
  fi
  venv=".venv-py$want"
  if [ ! -x "$venv/bin/pytest" ]; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
    if [ "$want" = 3.6 ]; then  # pip 18 does not skip releases that dropped 3.6: pin the last ones
      "$venv/bin/python" -m pip install -q "pytest==7.0.1" "iniconfig==1.1.1" "packaging==21.3" \
        "pluggy==1.0.0" "py==1.11.0" "attrs==22.2.0" "tomli==1.2.3" "importlib-metadata==4.8.3" \
        "zipp==3.6.0" "typing-extensions==4.1.1" "pyparsing==3.0.9"
    else
      "$venv/bin/python" -m pip install -q pytest
    fi
  fi
  echo "== agent side on $("$venv/bin/python" -V)"
  PYTHONPATH="$PWD" "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
done
