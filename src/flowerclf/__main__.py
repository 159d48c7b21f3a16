"""``python -m flowerclf`` runs the CLI."""

from flowerclf.cli.main import main

raise SystemExit(main())
