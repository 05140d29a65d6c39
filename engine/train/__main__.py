"""`python -m engine.train`: see engine.train.process."""

import sys

from engine.train.process import main

sys.exit(main())
