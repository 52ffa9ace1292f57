"""cor-bridge: removes people from COR workspaces when they leave an IdP group."""

__version__ = "0.1.0"
