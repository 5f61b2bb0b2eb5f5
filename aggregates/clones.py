"""A clone: a user's AI trading strategy, its numbered drafts and its published versions.

A draft is a checked strategy graph in canonical form; saving the same graph again is not
a new save. Publishing turns the current draft into an immutable version whose id is the
SHA-256 of that canonical form, so publishing a graph that is already a version of this
clone changes nothing. Archived clones take no changes; banned clones cannot publish.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from uuid import UUID

from eventsourcing.domain import event
from pydantic import StringConstraints

from aggregates.base import DomainAggregate
from aggregates.errors import ConflictError

# Text rules for everything users write that others see (clone names and descriptions,
# profiles, reports, moderation reasons). PostgreSQL refuses NUL in text; other C0 and C1
# controls, bidirectional overrides, embeddings, isolates and marks (U+202A-U+202E,
# U+2066-U+2069, U+200E/F, U+061C) and zero-width characters (U+200B-U+200D, U+2060,
# U+FEFF) only hide or disguise things from reviewers (a name that reads backwards, a
# look-alike of someone else's). Lone surrogates pydantic refuses itself. The escapes are
# ASCII and mean the same in pydantic's regex engine, Python's `re` and the OpenAPI document.
_HIDDEN = r"\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"
ONE_LINE = r"^[^\x00-\x1f" + _HIDDEN + r"]*$"
FREE_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f" + _HIDDEN + r"]*$"  # newlines and tabs allowed

CloneName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=ONE_LINE)
]
CloneDescription = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=2000, pattern=FREE_TEXT)
]


class CloneArchivedError(ConflictError):
    code = "clone-archived"


class CloneBannedError(ConflictError):
    code = "clone-banned"


class CloneHasNoDraftError(ConflictError):
    code = "clone-has-no-draft"


class Clone(DomainAggregate):
    # Drafts are saved often and each carries its graph; snapshots keep loads cheap.
    snapshot_interval: ClassVar[int | None] = 50

    class Created(DomainAggregate.Created):
        owner_id: UUID
        name: str
        description: str
        request_fingerprint: str

    class Updated(DomainAggregate.Event):
        name: str
        description: str

    class DraftSaved(DomainAggregate.Event):
        number: int
        digest: str
        graph: dict[str, Any]

    class Published(DomainAggregate.Event):
        version_id: str
        number: int
        draft_number: int
        graph: dict[str, Any]

    class Archived(DomainAggregate.Event):
        pass

    class Banned(DomainAggregate.Event):
        reason: str

    class AuditionEntered(DomainAggregate.Event):
        audition_id: UUID
        attempt: int

    @event(Created)
    def __init__(
        self, id: UUID, owner_id: UUID, name: str, description: str, request_fingerprint: str
    ) -> None:
        self.owner_id = owner_id
        self.name = name
        self.description = description
        self.request_fingerprint = request_fingerprint
        self.archived = False
        self.ban_reason: str | None = None
        self.draft_number = 0
        self.draft_digest: str | None = None
        self.draft_graph: dict[str, Any] | None = None
        self.versions: dict[str, int] = {}  # version id -> version number

    @property
    def banned(self) -> bool:
        return self.ban_reason is not None

    def has_version(self, version_id: str) -> bool:
        return version_id in self.versions

    @property
    def latest_version(self) -> str | None:
        """The version published last (what races run), None before the first."""
        return max(self.versions, key=self.versions.__getitem__) if self.versions else None

    def update(self, name: str, description: str) -> None:
        self.check_not_archived()
        if (name, description) != (self.name, self.description):
            self._updated(name=name, description=description)

    def save_draft(self, graph: dict[str, Any], digest: str) -> int:
        """Save a checked canonical graph; the same graph as the current draft is no new save."""
        self.check_not_archived()
        if digest != self.draft_digest:
            self._draft_saved(number=self.draft_number + 1, digest=digest, graph=graph)
        return self.draft_number

    def draft_to_publish(self) -> dict[str, Any]:
        """The current draft, if this clone may publish it."""
        self.check_not_archived()
        self.check_not_banned()
        if self.draft_graph is None:
            raise CloneHasNoDraftError("save a draft before publishing")
        return self.draft_graph

    def publish(self, graph: dict[str, Any], version_id: str) -> tuple[int, bool]:
        """Make the current draft (checked again by the caller) a version: (number, created)."""
        self.draft_to_publish()
        if version_id in self.versions:
            return self.versions[version_id], False
        self._published(
            version_id=version_id,
            number=len(self.versions) + 1,
            draft_number=self.draft_number,
            graph=graph,
        )
        return self.versions[version_id], True

    def archive(self) -> None:
        if not self.archived:
            self._archived()

    def ban(self, reason: str) -> None:
        if not self.banned:
            self._banned(reason=reason)

    def enter_audition(self, audition_id: UUID, attempt: int) -> None:
        """An audition attempt starts on this clone. Recorded on the clone (not only read),
        so the save conflicts with an archive or a ban committed meanwhile and the retry
        sees it: no attempt ever starts on a clone archived or banned before it."""
        self.check_not_archived()
        self.check_not_banned()
        self._audition_entered(audition_id=audition_id, attempt=attempt)

    def check_not_archived(self) -> None:
        if self.archived:
            raise CloneArchivedError(f"clone {self.id} is archived")

    def check_not_banned(self) -> None:
        if self.banned:
            raise CloneBannedError(f"clone {self.id} is banned: {self.ban_reason}")

    @event(Updated)
    def _updated(self, name: str, description: str) -> None:
        self.name = name
        self.description = description

    @event(DraftSaved)
    def _draft_saved(self, number: int, digest: str, graph: dict[str, Any]) -> None:
        self.draft_number = number
        self.draft_digest = digest
        self.draft_graph = graph

    @event(Published)
    def _published(
        self, version_id: str, number: int, draft_number: int, graph: dict[str, Any]
    ) -> None:
        self.versions[version_id] = number

    @event(Archived)
    def _archived(self) -> None:
        self.archived = True

    @event(Banned)
    def _banned(self, reason: str) -> None:
        self.ban_reason = reason

    @event(AuditionEntered)
    def _audition_entered(self, audition_id: UUID, attempt: int) -> None:
        pass
