"""`python -m mailgate` is the `mailgate` command."""

from mailgate.cli import main

raise SystemExit(main())
