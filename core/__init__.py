"""Shared foundation: settings, default models and the Qdrant/embedding setup."""
