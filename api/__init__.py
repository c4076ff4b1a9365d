"""The REST API, served by the same process as the Chainlit chat."""
