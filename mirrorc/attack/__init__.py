"""What a thief who copies normal.onnx gets (`mirrorc attack`), and the defence experiments."""
