import sys

from rtun.cli import main

sys.exit(main())
