"""What the command line shows: our own progress and results, not the libraries' chatter.

The CLI calls :func:`quiet_third_party` before it imports torch, transformers, datasets or pylate: their progress
bars ("Loading weights", "Generating train split", "Writing model shards"), advisory log lines and deprecation or
``pin_memory`` warnings are silenced, in this process and in the worker processes it starts (the settings are
environment variables, which children inherit). A variable the user has already set is left as it is.
Library users who import the package are not affected.

>>> import os
>>> quiet_third_party()
>>> os.environ["HF_HUB_DISABLE_PROGRESS_BARS"]
'1'
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub and transformers ("Loading weights", shards)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets ("Generating train split", "Map")
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning",
}
NOISY_LOGGERS = ("transformers", "sentence_transformers", "pylate", "datasets", "accelerate", "huggingface_hub")


def quiet_third_party() -> None:
    """Silence third-party progress bars, advisory logs and warnings for this process and its children."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # A library imported before this call has read its settings already: tell it directly.
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
