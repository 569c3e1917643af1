"""What the benchmarks and the tests build on (the tests import it, never the reverse).

- ``server``: start the real service (or the naive baseline) under gunicorn on a free port;
- ``cpu_lock``: the shared CPU lock heavy jobs hold while they run;
- ``slow_clients``: trickling uploads beside a normal client, against any base URL;
- ``fake_telegram``: a fake Telegram Bot API over real HTTP;
- ``latency``: percentiles of measured latencies;
- ``machine``: what the figures were measured on.
"""
