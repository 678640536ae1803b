"""``python -m lenssample ...`` (also ``torchrun ... -m lenssample eval CONFIG.toml``)."""

import sys

try:  # Ctrl-C while torch and transformers import (seconds) is an interruption too, not a traceback
    from lenssample.cli import console_main
except KeyboardInterrupt:
    print("\nlenssample: interrupted", file=sys.stderr)
    sys.exit(130)

console_main()
