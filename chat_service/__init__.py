"""chat-service: an API-first customer-support chat backend."""

__version__ = "0.1.0"
