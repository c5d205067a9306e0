"""``python -m lorsp.experiments --scale mini --chapter all --out results/mini`` (see :func:`.runner.main`)."""
from .runner import main

raise SystemExit(main())
