"""ResNet family (placeholder until written)."""
