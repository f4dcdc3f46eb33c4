import sys

from cdi_plugins.cli import main

sys.exit(main())
