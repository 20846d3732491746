"""``python -m bench`` (``make bench``): see :mod:`bench.main`."""

from bench.main import main

raise SystemExit(main())
