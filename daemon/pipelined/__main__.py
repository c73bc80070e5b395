from pipelined.cli.main import main

raise SystemExit(main())
