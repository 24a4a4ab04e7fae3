import sys

from imagineer_generator.cli import main

sys.exit(main())
