# Quick start on a fresh Debian 12 machine (as root):  make demo   |   make test
PY      ?= /usr/bin/python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
ZABBIX  ?= 6.0
LIFELINE ?=

.PHONY: demo demo-fleet demo-stop run test deps venv lint generate clean bench fuzz deb rpm

deps:
	bash scripts/install-deps.sh

$(STAMP): setup.cfg pyproject.toml
	$(MAKE) deps
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[admin,test]'
	touch $(STAMP)

venv: $(STAMP)

# The main job: the incident replayed on the real kernel and a real Zabbix, graphs in demo-out/.
# ZABBIX=7.0: on Zabbix 7.0 LTS from a Debian 13 root (built once, ~80 s, then reused).
# LIFELINE=1: with conntrack-zbx protect applied on the node first (docs/lifeline.md).
demo: $(STAMP)
	$(VPY) -m lab.demo --zabbix $(ZABBIX) $(if $(LIFELINE),--lifeline)

# The incident's fleet: four mirrorlist nodes, the same leaky range on each, one fleet problem per level.
demo-fleet: $(STAMP)
	$(VPY) -m lab.fleet

demo-stop: $(STAMP)
	$(VPY) -m lab.demo stop
	$(VPY) -m lab.fleet stop

# This host's counters and who holds its table: the checkout with the system python3 (the agent
# side is the standard library only), nothing installed first. `top` needs root.
run:
	$(PY) -m conntrack_zbx stats
	$(PY) -m conntrack_zbx top

lint: $(STAMP)
	$(VENV)/bin/ruff check conntrack_zbx lab tests bench packaging bin/conntrack-zbx
	$(VENV)/bin/mypy

# Speed and memory against the kernel's own floor, on real 262k/1M-entry tables (docs/performance.md).
bench: $(STAMP)
	$(VPY) bench/run.py --markdown docs/performance.md

# The long fuzz run, outside the default suite (docs/fuzzing.md).
fuzz: $(STAMP)
	$(VPY) tests/fuzz.py --examples 20000 --record docs/fuzzing.md

# Regenerate every file derived from conntrack_zbx/keys.py (tests check they are current).
generate: $(STAMP)
	$(VPY) -m conntrack_zbx.generate

test: $(STAMP)
	$(VENV)/bin/ruff check conntrack_zbx lab tests bench packaging bin/conntrack-zbx
	$(VENV)/bin/mypy
	bash scripts/test-pythons.sh
	$(VPY) -m pytest $(PYTEST_ARGS)

# Native packages for agent hosts, built offline from the checkout (docs/install.md).
deb:
	bash packaging/build-deb.sh dist

rpm:
	bash packaging/build-rpm.sh dist

clean:
	rm -rf $(VENV) .venv-py* build dist *.egg-info
