"""The gateway's OpenAI-compatible HTTP edge: the same pipeline as ChatService, a second transport.

    app.py             routes, auth, admission, one reply per request (stream or not)
    schemas.py         the request bodies, validated (pydantic) into the gateway's own types
    openai_format.py   reply events -> OpenAI objects (completion, chunk, usage, content_filter)
    errors.py          domain errors -> OpenAI error objects and HTTP statuses, in one place
    telemetry.py       the HTTP server span (joins the caller's W3C trace) and request metrics
    server.py          uvicorn inside the gateway's event loop, drained with the gRPC server

docs/gateway.md ("OpenAI-compatible HTTP API") says why it is one process with two ports.
"""
