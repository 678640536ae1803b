"""Deprecated module path, kept for code written against earlier releases: use ``lenssample.custom_generate``
(:func:`lenssample.api.decoder`)."""

from lenssample.api import decoder

__all__ = ["decoder"]
