"""gunicorn settings of the naive baseline: none, i.e. gunicorn's defaults.

Passed explicitly because gunicorn otherwise reads ./gunicorn.conf.py, which would give the
baseline our tuning (one model thread per worker). Workers come from WEB_CONCURRENCY, as on
Heroku.
"""

# The one exception: no control socket (its default path is shared by every gunicorn of the
# user, e.g. the test suite's); it has nothing to do with speed.
control_socket_disable = True
