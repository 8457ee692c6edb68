"""Retention of released-data metadata by crypto-shredding (docs/retention.md)."""
