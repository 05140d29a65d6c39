"""`python -m engine.sample`: see engine.sample.generate."""

import sys

from engine.sample.generate import main

sys.exit(main())
