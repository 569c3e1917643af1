"""BreedRecognizer web service: settings, the app factory, the HTTP API and page, the front
that faces the network, and the Telegram bot.

Its parts (http/, feedback/, front/, telegram_bot/) take what they share from the top-level
modules (settings, metrics, answer, breed_names, redis_client), and use each other only along
the edges tests/test_layers.py allows. It sits on top of ``model/`` (the runtime) and never
imports ``training/``.
"""
