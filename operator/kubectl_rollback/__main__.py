"""`python -m kubectl_rollback`: the same as `kubectl rollback`."""

import sys

from kubectl_rollback.cli import main

sys.exit(main())
