"""`python -m fuzz`: the same as the `normfuzz` console script."""

from fuzz.cli import main

raise SystemExit(main())
