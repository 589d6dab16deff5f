"""vmgateway: the software of the Vetmanager Gateway box (see README.md)."""

__version__ = "0.1.0"
