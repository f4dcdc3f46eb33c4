"""The version of cdi-plugins (its own module so that any layer can read it without the package face)."""

__version__ = "0.1.0"
