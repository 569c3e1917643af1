"""BreedRecognizer web layer: settings, JSON errors, upload handling, metrics and the HTML page.

It sits on top of ``model/`` (the runtime) and never imports ``training/``.
"""
