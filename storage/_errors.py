from __future__ import annotations


class StoreError(Exception):
    """The study store cannot be opened, reached or read.

    The message is one line and never holds a password.
    """
