"""mirrorc: compile an ONNX classifier into a MirrorNet deployment (backbone + secure CPM)."""

__version__ = "0.1.0"
