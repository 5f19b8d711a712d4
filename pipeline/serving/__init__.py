"""Serving: loading exported models, request checking, the HTTP app, batch prediction, export checks."""
