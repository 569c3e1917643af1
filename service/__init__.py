"""BreedRecognizer web service: settings, the app factory, the HTTP API and page, the front
that faces the network, and the Telegram bot.

It sits on top of ``model/`` (the runtime) and never imports ``training/``.
"""
