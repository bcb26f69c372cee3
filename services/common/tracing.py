"""The spans of a chat turn across the services, and the attribute names they share.

A turn's trace, as a tree (the gRPC spans come from the OpenTelemetry interceptors that `Telemetry`
installs; the rest from each service's own helpers):

    llamagate.chat.turn                         gateway (one trace per turn; gateway/tracing.py)
      llamagate.safety.input                    gateway
        /llamagate.v1.SafetyService/Check       gateway client span -> safety server span
      /llamagate.v1.InferenceService/Generate   gateway client span -> inference server span
        llamagate.generate                      inference (inference/tracing.py); events "first_token", "finish"
          llamagate.queue_wait / llamagate.prefill / llamagate.decode
      llamagate.safety.output  (one per chunk)  gateway, around each CheckStream chunk

Span attributes carry ids, counts and reasons, never prompt or completion text.
"""

from __future__ import annotations

# The request id on the gateway's turn span and on the engine's generate span: one search finds both.
REQUEST_ID = "llamagate.request_id"
