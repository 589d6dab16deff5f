from vmgateway.cli import main

raise SystemExit(main())
