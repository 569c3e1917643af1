"""BreedRecognizer test suite (a package, so tests import ``tests.support`` and ``model``)."""
