"""Recognition stage: embeddings gallery, matching, tracking, attendance database, live loop."""
