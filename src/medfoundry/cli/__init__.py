"""Command-line interface (``medfoundry``)."""
