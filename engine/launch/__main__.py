"""`python -m engine.launch`: see engine.launch.dispatcher."""

import sys

from engine.launch.dispatcher import main

sys.exit(main())
