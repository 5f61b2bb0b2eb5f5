"""Failures every area shares. Each area adds its own under these bases.

`code` is the stable problem `type` a client sees; the API maps each base to a status.
"""


class DomainError(Exception):
    code = "domain-error"


class InvalidCommandError(DomainError):
    """The command is well formed but breaks a rule (answered 422)."""

    code = "invalid-command"


class NotFoundError(DomainError):
    code = "not-found"


class ConflictError(DomainError):
    """The command clashes with the current state (answered 409)."""

    code = "conflict"


class PaymentRequiredError(DomainError):
    """The command needs something paid for that the caller does not hold (answered 402)."""

    code = "payment-required"


class ConcurrencyConflictError(ConflictError):
    """Other commands kept changing the aggregate; retries ran out."""

    code = "concurrency-conflict"


class IdempotencyKeyReusedError(ConflictError):
    """The same idempotency key came back with a different request."""

    code = "idempotency-key-reused"


class MissingCommandContextError(DomainError):
    """An event was triggered outside a command: no actor, no time."""

    code = "missing-command-context"


class AuthenticationFailedError(DomainError):
    """Credentials were presented and are not good (answered 401)."""

    code = "unauthenticated"


class NotPermittedError(DomainError):
    """The caller is known but may not do this (answered 403)."""

    code = "forbidden"
