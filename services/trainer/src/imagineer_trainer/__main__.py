import sys

from imagineer_trainer.cli import main

sys.exit(main())
