"""One read before any create (``bulk``, ``render``): a rejected key or an unreachable API
stops the command with nothing sent, in one line and the same exit code everywhere. The
same wording for every command's reads (``reach``): ``credits``, ``status``, ..."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from .. import AuthenticationError, ConnectError, Credits, ViggleClient, ViggleError
from .._errors import NotFoundError
from ._common import CliError, Ctx
from ._progress import EventView

__all__ = ["preflight", "reach"]

T = TypeVar("T")

# Between CLI-level retries of a read that cannot connect (--connect-timeout): each retry
# is itself the library's few quick attempts (RetryPolicy.max_attempts).
_MAX_PAUSE = 5.0


async def reach(ctx: Ctx, client: ViggleClient, call: Callable[[], Awaitable[T]], *,
                job_id: str | None = None) -> T:
    """``call()``, with a read that cannot connect retried until ``--connect-timeout``
    seconds have passed (without it: the library's retries only, a few seconds).

    Raises ``CliError`` (exit 2) naming the fix when the key is rejected or the API cannot
    be reached; with ``job_id``, a 404 (exit 1) says the id may belong to another base URL
    or account."""
    deadline = getattr(ctx.args, "connect_timeout", None)
    clock = client.clock
    started = clock.now()
    attempt = 0
    while True:
        try:
            return await call()
        except AuthenticationError as exc:
            raise CliError(f"the API rejected VIGGLE_API_KEY ({exc}); nothing was "
                           "sent") from None
        except ConnectError as exc:
            pause = min(2.0 ** attempt, _MAX_PAUSE)
            if deadline is not None and clock.now() + pause - started <= deadline:
                attempt += 1
                await clock.sleep_until(clock.now() + pause)
                continue
            raise CliError(f"cannot reach the API at {client.base_url} ({exc}); check "
                           "--base-url / VIGGLE_BASE_URL (or wait longer: "
                           "--connect-timeout SECONDS); nothing was sent") from None
        except NotFoundError as exc:
            if job_id is None:
                raise
            raise CliError(f"{exc}: no job {job_id} at {client.base_url}; was it made with "
                           "another --base-url / VIGGLE_BASE_URL or another API key?",
                           1) from None


async def preflight(ctx: Ctx, client: ViggleClient, view: EventView) -> Credits | None:
    """The balance (None when the endpoint is unavailable); raises ``CliError`` (exit 2)
    when the key is rejected or the API cannot be reached (its retries are not logged)."""
    view.show_retries = False
    try:
        credits: Credits = await reach(ctx, client, client.get_credits)
    except CliError:
        raise
    except ViggleError:
        # docs/api/credits.md#credits-endpoint is not in the versioned docs: a missing endpoint
        # must not stop
        return None
    finally:
        view.show_retries = True
    return credits
