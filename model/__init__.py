"""BreedRecognizer model runtime: artifact loading, preprocessing and prediction.

Serving and the training lab's evaluation both use this package, so what is evaluated is
exactly what is served. It needs numpy, Pillow and one backend: onnxruntime for ONNX
artifacts, torch only for TorchScript ones. Building artifacts (ONNX export, int8) is the
lab's job (``training.release``), so this package never imports ``onnx`` or the quantizer.
"""
