"""Users teach the model: the photo behind a recent answer, and the corrections people send.

``recent`` keeps each answered photo for a while (bounded), ``store`` keeps the corrections
(``FEEDBACK_URI``: a folder or S3), and ``service.Feedback`` joins them for the API and the bot.
"""
