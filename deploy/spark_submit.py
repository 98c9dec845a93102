"""`tripscore` as the Python file `spark-submit` runs; the code comes from the wheel passed with `--py-files`."""

import sys

from tripscore.cli import main

sys.exit(main())
