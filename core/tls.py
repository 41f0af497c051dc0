"""One TLS context per process, shared by every HTTP client the project creates."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx's default context (the certifi bundle, ``SSL_CERT_FILE`` honoured), built once.

    httpx builds a new one for every client not handed one, loading the whole CA bundle (~15 ms of CPU) even for a
    plain-HTTP client. An agent opens an LLM client per rollout: profiled under load, that was two thirds of an
    agent runner's CPU, taken from the LLM on a small machine.
    """
    return httpx.create_ssl_context()
