"""Test-only helpers: the suite's server defaults, the bot tests' webhook secret, edited
artifacts, data-set lookup. What benchmarks and tests share lives in benchmarks/harness/."""
