"""Hostile input through a real server: each a clear refusal, never a crash (issue 4)."""
