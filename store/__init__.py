"""Stores: attendance records and embeddings behind interfaces, built from Config by one factory."""
