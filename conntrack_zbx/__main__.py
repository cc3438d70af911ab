from conntrack_zbx.cli import main

raise SystemExit(main())
