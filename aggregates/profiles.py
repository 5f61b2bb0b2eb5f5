"""A clone's public profile: submitted by the owner, moderated by admins, reported by users.

    pending --approve--> approved --N distinct reports--> under_review --restore--> approved
       |                                                       |--keep hidden--> kept_hidden
       +--reject--> rejected                                   +--ban--> banned (the clone too)

An edit by the owner returns the profile to pending (from pending, approved, rejected or
kept_hidden; not while under review, banned or withdrawn). Only an approved profile is
public. Each reporter reports a profile once; a repeat changes nothing. Reports since the
last review from reporters in good standing count towards the threshold; a review closes
them. A report from anyone else is recorded (`counts` false) but never hides the profile.
Archiving the clone withdraws its profile.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, get_args
from uuid import UUID

from eventsourcing.domain import event
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)

from aggregates.base import DomainAggregate, derive_id
from aggregates.clones import FREE_TEXT, ONE_LINE
from aggregates.errors import ConflictError, InvalidCommandError, NotFoundError

ReportReason = Literal["spam", "scam", "impersonation", "offensive", "misleading", "other"]
REPORT_REASONS: tuple[str, ...] = get_args(ReportReason)
_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


def https_url(value: str) -> str:
    """An absolute https URL with a host and no credentials, in normalized form."""
    try:
        url = _HTTP_URL.validate_python(value)
    except ValidationError:
        raise ValueError("not a valid URL") from None
    if url.scheme != "https" or not url.host:
        raise ValueError("only https URLs are allowed")
    if url.username or url.password:
        raise ValueError("URLs must not carry credentials")
    return str(url)


# The raw text too: a link's hidden characters would be percent-encoded, not refused.
HttpsUrl = Annotated[
    str, StringConstraints(max_length=512, pattern=ONE_LINE), AfterValidator(https_url)
]
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=48, pattern=ONE_LINE)
]
Bio = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500, pattern=FREE_TEXT)]
ReportText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=1000, pattern=FREE_TEXT)
]
ModerationReason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500, pattern=FREE_TEXT)
]


class ProfileDetails(BaseModel):
    """What the owner submits; lengths are capped and URLs checked here, once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    display_name: DisplayName
    bio: Bio = ""
    avatar_url: HttpsUrl | None = None
    links: Annotated[list[HttpsUrl], Field(max_length=5)] = []


class ReportDetails(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: ReportReason
    text: ReportText = ""


class ProfileStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    UNDER_REVIEW = "under_review"
    KEPT_HIDDEN = "kept_hidden"
    BANNED = "banned"
    WITHDRAWN = "withdrawn"


EDITABLE = (
    ProfileStatus.PENDING,
    ProfileStatus.APPROVED,
    ProfileStatus.REJECTED,
    ProfileStatus.KEPT_HIDDEN,
)


def profile_id_for(clone_id: UUID) -> UUID:
    """One profile per clone."""
    return derive_id("PublicProfile", str(clone_id))


def report_id_for(profile_id: UUID, reporter_id: UUID) -> UUID:
    """One report per reporter per profile."""
    return derive_id("ProfileReport", f"{profile_id}:{reporter_id}")


class ProfileNotPublicError(NotFoundError):
    """Profiles that are not public are answered like missing ones."""

    code = "not-found"


class OwnProfileReportError(InvalidCommandError):
    code = "own-profile-report"


class ProfileNotEditableError(ConflictError):
    code = "profile-not-editable"


class ProfileNotPendingError(ConflictError):
    code = "profile-not-pending"


class ProfileNotUnderReviewError(ConflictError):
    code = "profile-not-under-review"


class PublicProfile(DomainAggregate):
    # Reports accumulate on popular profiles; snapshots keep loads cheap.
    snapshot_interval: ClassVar[int | None] = 50

    class Opened(DomainAggregate.Created):
        clone_id: UUID
        owner_id: UUID

    class Submitted(DomainAggregate.Event):
        display_name: str
        bio: str
        avatar_url: str | None
        links: list[str]

    class Approved(DomainAggregate.Event):
        reason: str

    class Rejected(DomainAggregate.Event):
        reason: str

    class Reported(DomainAggregate.Event):
        report_id: UUID
        reporter_id: UUID
        reason: str
        text: str
        counts: bool = True  # events from before standing was judged all counted

    class Hidden(DomainAggregate.Event):
        open_reports: int

    class Restored(DomainAggregate.Event):
        reason: str

    class KeptHidden(DomainAggregate.Event):
        reason: str

    class Banned(DomainAggregate.Event):
        reason: str

    class Withdrawn(DomainAggregate.Event):
        pass

    @event(Opened)
    def __init__(self, id: UUID, clone_id: UUID, owner_id: UUID) -> None:
        self.clone_id = clone_id
        self.owner_id = owner_id
        # Plain values only: aggregate state is stored in snapshots as JSON.
        self.status: str = ProfileStatus.PENDING.value
        self.details: dict[str, Any] | None = None
        self.reporters: list[UUID] = []  # everyone who ever reported it
        self.open_reporters: list[UUID] = []  # reports since the last review

    @classmethod
    def open(cls, clone_id: UUID, owner_id: UUID) -> PublicProfile:
        return cls(id=profile_id_for(clone_id), clone_id=clone_id, owner_id=owner_id)

    @property
    def is_public(self) -> bool:
        return self.status == ProfileStatus.APPROVED

    def submit(self, details: ProfileDetails) -> None:
        """An edit returns the profile to pending; resubmitting what is there changes nothing."""
        if self.status not in EDITABLE:
            raise ProfileNotEditableError(f"the profile is {self.status}; it cannot be edited")
        unchanged = details.model_dump() == self.details
        if unchanged and self.status in (ProfileStatus.PENDING, ProfileStatus.APPROVED):
            return
        self._submitted(
            display_name=details.display_name,
            bio=details.bio,
            avatar_url=details.avatar_url,
            links=list(details.links),
        )

    def approve(self, reason: str) -> None:
        if self.status == ProfileStatus.APPROVED:
            return
        self.check_status(ProfileStatus.PENDING, ProfileNotPendingError)
        self._approved(reason=reason)

    def reject(self, reason: str) -> None:
        if self.status == ProfileStatus.REJECTED:
            return
        self.check_status(ProfileStatus.PENDING, ProfileNotPendingError)
        self._rejected(reason=reason)

    def report(
        self,
        reporter_id: UUID,
        details: ReportDetails,
        threshold: int,
        in_good_standing: bool = True,
    ) -> UUID:
        """Record a reporter once; the threshold-th open report from reporters in good
        standing hides the profile for review. Other reports are recorded, never counted."""
        if not self.is_public:
            raise ProfileNotPublicError(f"profile {self.id} not found")
        if reporter_id == self.owner_id:
            raise OwnProfileReportError("you cannot report your own profile")
        report_id = report_id_for(self.id, reporter_id)
        if reporter_id in self.reporters:
            return report_id
        self._reported(
            report_id=report_id,
            reporter_id=reporter_id,
            reason=details.reason,
            text=details.text,
            counts=in_good_standing,
        )
        if in_good_standing and len(self.open_reporters) >= threshold:
            self._hidden(open_reports=len(self.open_reporters))
        return report_id

    def restore(self, reason: str) -> None:
        if self.status == ProfileStatus.APPROVED:
            return
        self.check_status(ProfileStatus.UNDER_REVIEW, ProfileNotUnderReviewError)
        self._restored(reason=reason)

    def keep_hidden(self, reason: str) -> None:
        if self.status == ProfileStatus.KEPT_HIDDEN:
            return
        self.check_status(ProfileStatus.UNDER_REVIEW, ProfileNotUnderReviewError)
        self._kept_hidden(reason=reason)

    def ban(self, reason: str) -> None:
        if self.status != ProfileStatus.BANNED:
            self._banned(reason=reason)

    def withdraw(self) -> None:
        if self.status not in (ProfileStatus.WITHDRAWN, ProfileStatus.BANNED):
            self._withdrawn()

    def check_status(self, wanted: ProfileStatus, error: type[ConflictError]) -> None:
        if self.status != wanted:
            raise error(f"the profile is {self.status}, not {wanted.value}")

    @event(Submitted)
    def _submitted(
        self, display_name: str, bio: str, avatar_url: str | None, links: list[str]
    ) -> None:
        self.details = {
            "display_name": display_name,
            "bio": bio,
            "avatar_url": avatar_url,
            "links": links,
        }
        self.status = ProfileStatus.PENDING.value

    @event(Approved)
    def _approved(self, reason: str) -> None:
        self.status = ProfileStatus.APPROVED.value

    @event(Rejected)
    def _rejected(self, reason: str) -> None:
        self.status = ProfileStatus.REJECTED.value

    @event(Reported)
    def _reported(
        self, report_id: UUID, reporter_id: UUID, reason: str, text: str, counts: bool = True
    ) -> None:
        self.reporters = [*self.reporters, reporter_id]
        if counts:
            self.open_reporters = [*self.open_reporters, reporter_id]

    @event(Hidden)
    def _hidden(self, open_reports: int) -> None:
        self.status = ProfileStatus.UNDER_REVIEW.value

    @event(Restored)
    def _restored(self, reason: str) -> None:
        self.status = ProfileStatus.APPROVED.value
        self.open_reporters = []

    @event(KeptHidden)
    def _kept_hidden(self, reason: str) -> None:
        self.status = ProfileStatus.KEPT_HIDDEN.value
        self.open_reporters = []

    @event(Banned)
    def _banned(self, reason: str) -> None:
        self.status = ProfileStatus.BANNED.value
        self.open_reporters = []

    @event(Withdrawn)
    def _withdrawn(self) -> None:
        self.status = ProfileStatus.WITHDRAWN.value
