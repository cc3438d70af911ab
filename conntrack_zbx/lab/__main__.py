import json
import sys

from conntrack_zbx.lab.netns import make_traffic

if sys.argv[1:] == ["traffic"]:
    json.dump(make_traffic(json.load(sys.stdin)), sys.stdout)
else:
    raise SystemExit("usage: python -m conntrack_zbx.lab traffic < spec.json")
