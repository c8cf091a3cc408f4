"""Conversion: the convert() pipeline, model sources, calibration sets, ONNX tools, the parity check, and
one module per target format in formats/."""
