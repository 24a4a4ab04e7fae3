import sys

from imagineer_catalog.cli import main

sys.exit(main())
