"""GPU sharing: several replicas on one physical GPU (MIG instances; vGPU and time-slicing to come, issue #5)."""
