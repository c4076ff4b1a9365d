"""The Chainlit chat and the REST API in one server (see api/)."""
