from oceanda.cli import main

raise SystemExit(main())
