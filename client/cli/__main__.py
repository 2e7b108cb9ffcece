import sys

from stad.client.cli.app import main

sys.exit(main())
