"""API keys with scopes: the keys' store (``keys.py``), the middleware that checks them (``middleware.py``), how
clients find theirs (``discovery.py``) and the local admin key of ``agl up`` (``bootstrap.py``)."""
