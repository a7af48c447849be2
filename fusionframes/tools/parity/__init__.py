"""Parity with the official code: fixture reading and the per-case checks behind ``check-parity``."""
