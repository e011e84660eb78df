"""The one place the version of xshm and xshm-text is set."""

__version__ = "0.1.0"
