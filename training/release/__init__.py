"""Building a release from a finished run: export, ONNX, int8, open-set rule, prior, ship."""
