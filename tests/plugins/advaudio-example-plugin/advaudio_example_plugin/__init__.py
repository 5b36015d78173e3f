"""Example advaudio plugins (see pyproject.toml for the entry points and README.md, "Plugins")."""

__version__ = "0.1.0"
