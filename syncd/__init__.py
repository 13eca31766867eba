"""syncd: Keycloak groups as the source of truth for LiteLLM proxy teams."""

__version__ = "0.1.0"
