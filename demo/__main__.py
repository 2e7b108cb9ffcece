import sys

from stad.demo.steps import main

sys.exit(main())
