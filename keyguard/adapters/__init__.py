"""Framework adapters. Import each by its full path (``keyguard.adapters.fastapi``); each one
imports only its own framework, and only when imported."""
