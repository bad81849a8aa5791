"""`python -m benchmarks`: the whole suite, one table (see `benchmarks.suite`)."""

from benchmarks.suite import main

raise SystemExit(main())
