"""``python -m lenssample ...`` (also ``torchrun ... -m lenssample eval CONFIG.toml``)."""

from lenssample.cli import console_main

console_main()
