"""Pydantic request and response models: the public contract of the API."""
