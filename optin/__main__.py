"""``python -m optin …`` is the ``optin`` command."""

from .cli import main

main()
