import sys

from agl.cli import main

sys.exit(main())
