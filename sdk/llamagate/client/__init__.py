"""The llamagate Python SDK: chat sessions and text completions over the gateway's ChatService.

    from llamagate.client import ChatClient, Sampling

    with ChatClient("localhost:50051", api_key="dev-key") as client:
        session = client.chat(system_prompt="Answer briefly.", sampling=Sampling(temperature=0))
        for chunk in session.send("What is the capital of France?").text_chunks():
            print(chunk, end="", flush=True)

`AsyncChatClient` is the asyncio mirror. Errors are `ApiError` subclasses, one per status code.
"""

from llamagate.client.async_client import AsyncChatClient, AsyncChatSession, AsyncCompletion, AsyncReply
from llamagate.client.connection import TlsConfig
from llamagate.client.errors import (
    AbortedError,
    AlreadyExistsError,
    ApiError,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from llamagate.client.health import check_health
from llamagate.client.retry import NO_RETRY, RetryPolicy
from llamagate.client.sync_client import ChatClient, ChatSession, Completion, Reply
from llamagate.client.types import (
    Accepted,
    CategoryScore,
    Direction,
    Done,
    FinishReason,
    Message,
    ReplyEvent,
    Role,
    SafetyCheck,
    SafetyRefusal,
    SafetyVerdict,
    Sampling,
    TextChunk,
    Usage,
)

__all__ = [
    "NO_RETRY",
    "AbortedError",
    "Accepted",
    "AlreadyExistsError",
    "ApiError",
    "AsyncChatClient",
    "AsyncChatSession",
    "AsyncCompletion",
    "AsyncReply",
    "CancelledError",
    "CategoryScore",
    "ChatClient",
    "ChatSession",
    "Completion",
    "DataLossError",
    "DeadlineExceededError",
    "Direction",
    "Done",
    "FailedPreconditionError",
    "FieldViolation",
    "FinishReason",
    "InternalError",
    "InvalidArgumentError",
    "Message",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "Reply",
    "ReplyEvent",
    "RetryPolicy",
    "Role",
    "SafetyCheck",
    "SafetyRefusal",
    "SafetyVerdict",
    "Sampling",
    "TextChunk",
    "TlsConfig",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "Usage",
    "check_health",
]
