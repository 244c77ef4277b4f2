"""``python -m fracture`` entry point."""
from fracture.cli import main

raise SystemExit(main())
