"""``python -m colbert_az_pylate.cli`` is the ``colbert-az`` command too."""

import sys

from colbert_az_pylate.cli.dispatcher import main

sys.exit(main())
