"""The Zabbix template, generated (admin side: uses pyyaml, never imported by the agent keys).

``model.py`` holds the templates as plain Python data built from ``conntrack_zbx.keys`` and the
stat parser's stable counter names; ``render.py`` turns it into the 6.0 YAML export and the
per-template README. ``python -m conntrack_zbx.generate`` writes both; tests check they are current.
"""
