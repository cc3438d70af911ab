"""The test lab: real namespaces, real agents, a real Zabbix stack, the incident replay.

Not part of the product: it lives beside the package in the checkout, is never installed by
``pip install .`` or the native packages, and only tests, ``bench/`` and ``make demo`` use it (as
root). Lab helpers start each other as ``python -m lab.<module>`` with the checkout (``REPO``) as
their working directory, which is how they find the lab. (Not through PYTHONPATH: that would leak
into every child, and pip would then take the checkout's metadata for an installed package.)
"""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
