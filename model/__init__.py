"""BreedRecognizer model runtime: artifact loading, preprocessing and prediction.

Serving and the training lab's evaluation both use this package, so what is evaluated is
exactly what is served. It depends on torch (or onnxruntime), numpy and Pillow only.
"""
