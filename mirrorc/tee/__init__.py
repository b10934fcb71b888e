"""The normal world's side of the TEE: the GlobalPlatform TEE Client API (libteec or the simulator)
and protected inference (normal.onnx in onnxruntime + the TA)."""
