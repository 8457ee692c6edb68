"""The verifiable audit log: signed checkpoints and RFC 9162 proofs over HTTP."""
