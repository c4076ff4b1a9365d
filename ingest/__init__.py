"""Files -> documents with page/section metadata -> chunks -> embeddings -> Qdrant."""
