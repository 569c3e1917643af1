"""What the tests build on, and the benchmarks import (never the reverse): the gunicorn
launcher (``gunicorn_server``) and the suite's defaults on it (``server``), the fake Telegram
Bot API and Telegram's side of the webhook (``fake_telegram``, ``delivery``), slow clients,
a throwaway Redis, generated photos and hostile uploads, latency percentiles, edited
artifacts, S3 through moto, data-set lookup."""
