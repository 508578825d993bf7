"""GPU sharing: several replicas on one physical GPU (vGPU time-slicing, MIG, Kubernetes time-slicing, MPS)."""
