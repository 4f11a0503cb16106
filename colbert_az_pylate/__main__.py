"""``python -m colbert_az_pylate`` is the ``colbert-az`` command."""

import sys

from colbert_az_pylate.cli import main

sys.exit(main())
