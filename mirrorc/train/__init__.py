"""Training on the ONNX graph: the datasets, the torch interpreter of ONNX graphs, the one training
loop, and the protection strategies (what each trains)."""
