"""What runs on the device with only ``edgeeff[runtime]``: a TFLite runtime and OpenCV, never
TensorFlow. Imports only ``edgeeff.core`` and ``edgeeff.device`` (tests/test_layers.py)."""
