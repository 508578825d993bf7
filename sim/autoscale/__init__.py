"""Autoscalers: each a small policy deciding a pool's replica count from a metrics snapshot (issue #6)."""
