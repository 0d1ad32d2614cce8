"""Per-key credit balances with a full history (docs/api/credits.md#costs)."""

from __future__ import annotations

import attrs

__all__ = ["BalanceEntry", "Ledger"]


@attrs.frozen
class BalanceEntry:
    """One change of a key's balance. ``reason``: start, topup, render, character, refund."""

    api_key: str
    at: str
    delta: int
    balance: int
    reason: str
    ref: str | None


@attrs.define
class _Account:
    balance: int
    purchased: int
    used: int = 0
    updated_at: str = ""


class Ledger:
    """Balances keyed by API key; every change is appended to :attr:`history`."""

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self.history: list[BalanceEntry] = []

    def open(self, key: str, balance: int, at: str) -> None:
        """Create the account if it does not exist yet."""
        if key not in self._accounts:
            self._accounts[key] = _Account(balance=balance, purchased=balance, updated_at=at)
            self.history.append(BalanceEntry(key, at, balance, balance, "start", None))

    def balance(self, key: str) -> int:
        return self._accounts[key].balance

    def summary(self, key: str) -> dict[str, object]:
        """The ``GET /api/credits`` body (docs/api/credits.md#credits-endpoint)."""
        a = self._accounts[key]
        return {
            "balance": a.balance,
            "credits": a.balance,
            "total_purchased": a.purchased,
            "total_used": a.used,
            "updated_at": a.updated_at,
        }

    def charge(self, key: str, amount: int, reason: str, ref: str, at: str) -> bool:
        """Take ``amount`` if the balance covers it; False (and no change) otherwise."""
        a = self._accounts[key]
        if amount > a.balance:
            return False
        self._change(a, key, -amount, reason, ref, at)
        a.used += amount
        return True

    def refund(self, key: str, amount: int, ref: str, at: str) -> None:
        a = self._accounts[key]
        self._change(a, key, amount, "refund", ref, at)
        a.used -= amount

    def top_up(self, key: str, amount: int, at: str) -> None:
        a = self._accounts[key]
        self._change(a, key, amount, "topup", None, at)
        a.purchased += amount

    def _change(
        self, a: _Account, key: str, delta: int, reason: str, ref: str | None, at: str
    ) -> None:
        a.balance += delta
        a.updated_at = at
        self.history.append(BalanceEntry(key, at, delta, a.balance, reason, ref))
