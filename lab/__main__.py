import json
import sys

if sys.argv[1:2] == ["traffic"]:
    from lab.netns import make_traffic

    json.dump(make_traffic(json.load(sys.stdin)), sys.stdout)
elif sys.argv[1:2] == ["mirrorlist"]:
    from lab.mirrorlist import serve

    serve(sys.argv[2], int(sys.argv[3]))
elif sys.argv[1:2] == ["stack-stop"]:
    from lab.stack import stop_pids

    stop_pids(sys.argv[2] if len(sys.argv) > 2 else "/var/tmp/ctzbx-stack")
elif sys.argv[1:2] == ["debroot"]:
    from lab.debroot import DebRoot

    print(DebRoot(sys.argv[2] if len(sys.argv) > 2 else "trixie").ensure().path)
else:
    raise SystemExit("usage: python -m lab traffic < spec.json | mirrorlist HOST PORT | "
                     "stack-stop [BASE] | debroot [SUITE]")
