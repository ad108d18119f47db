"""Records of retention and erasure crossing the store interface."""

from __future__ import annotations

from dataclasses import dataclass, field

from billbridge.store.records import CustomerRecord, DeliveryStatus


@dataclass(frozen=True)
class PersonData:
    """What the store holds about one person, found from a customer id or an email: the
    customers, emails and names to erase, and the modes (live, test) they were seen in."""

    customer_ids: frozenset[str]
    emails: frozenset[str]  # lower-cased
    names: frozenset[str]
    customers: tuple[CustomerRecord, ...]  # the customers-table rows (for the identifier)
    livemodes: frozenset[bool]
    events: int  # events naming this person

    @property
    def values(self) -> set[str]:
        """Every value to redact from free text (errors) while erasing."""
        return set(self.customer_ids) | set(self.emails) | set(self.names)


@dataclass(frozen=True)
class ErasureRecord:
    """One recorded erasure: never the data, only its hash and counts."""

    erasure_id: int
    created_at: float
    matched_by: str  # "customer" | "email"
    matched_hash: str  # SHA-256 hex of the customer id or the lower-cased email
    customers: int
    events: int
    requested_by: str
    cio_action: str  # delete | suppress | none
    cio_event_ids: tuple[str, ...]
    # The Customer.io action's deliveries' statuses (one per synthetic event).
    cio_statuses: tuple[DeliveryStatus, ...] = field(default=())
