"""What the tests build on: real gunicorn servers, generated images, data-set lookup."""
