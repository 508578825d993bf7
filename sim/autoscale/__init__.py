"""Autoscalers: each a small policy deciding a pool's replica count from a metrics snapshot (HPA, KEDA, KPA,
scheduled, predictive, and one across pools)."""
