"""What only the benchmarks build on; what they share with the tests (the gunicorn launcher,
the fake Bot API, slow clients, Redis, photos) lives in tests/support/.

- ``cpu_lock``: the shared CPU lock heavy jobs hold while they run;
- ``machine``: what the figures were measured on;
- ``parallel``: calls per second of several processes started together.
"""
