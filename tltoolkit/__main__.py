import sys

from tltoolkit.cli import main

sys.exit(main())
