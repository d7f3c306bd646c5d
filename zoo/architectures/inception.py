"""Inception family (placeholder until written)."""
