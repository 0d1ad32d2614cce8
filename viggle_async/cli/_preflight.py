"""One read before any create (``bulk``, ``render``): a rejected key or an unreachable API
stops the command with nothing sent, in one line and the same exit code everywhere."""

from __future__ import annotations

from .. import AuthenticationError, ConnectError, Credits, ViggleClient, ViggleError
from ._common import CliError, Ctx
from ._progress import EventView

__all__ = ["preflight"]


async def preflight(ctx: Ctx, client: ViggleClient, view: EventView) -> Credits | None:
    """The balance (None when the endpoint is unavailable); raises ``CliError`` (exit 2)
    when the key is rejected or the API cannot be reached (its retries are not logged)."""
    del ctx
    view.show_retries = False
    try:
        credits: Credits = await client.get_credits()
    except AuthenticationError as exc:
        raise CliError(f"the API rejected VIGGLE_API_KEY ({exc}); nothing was sent") from None
    except ConnectError as exc:
        raise CliError(f"cannot reach the API at {client.base_url} ({exc}); check "
                       "--base-url / VIGGLE_BASE_URL; nothing was sent") from None
    except ViggleError:
        # docs/api/credits.md#credits-endpoint is not in the versioned docs: a missing endpoint
        # must not stop
        return None
    finally:
        view.show_retries = True
    return credits
