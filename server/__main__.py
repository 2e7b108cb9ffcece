"""`python -m stad.server` runs `stad serve`."""

import sys

from stad.server.app import main

sys.exit(main())
