"""Retrieval, the QLoRA chat model, and the generation/summarization chains."""
