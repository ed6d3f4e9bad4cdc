"""Typed dependencies: the app's context and each domain's service, per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam

from audience_manager.api.auth import require
from audience_manager.api.management.attributes.service import AttributeService
from audience_manager.api.management.audiences.service import AudienceService
from audience_manager.api.management.membership_cache import MembershipCache
from audience_manager.api.management.processor_client import ProcessorClient
from audience_manager.api.management.segments.members import MemberService
from audience_manager.api.management.segments.service import SegmentService
from audience_manager.api.management.users.service import UserService
from audience_manager.backends import Backends
from audience_manager.config import Settings

__all__ = [
    "ADMIN",
    "READ",
    "AttributeServiceDep",
    "AudienceServiceDep",
    "ManagementContext",
    "MemberServiceDep",
    "SegmentServiceDep",
    "UserServiceDep",
    "attribute_service",
    "audience_service",
    "context",
    "member_service",
    "segment_service",
    "user_service",
]

READ: list[DependsParam] = [Depends(require("read"))]
"""Route dependencies of reads: a key with the ``read`` scope."""
ADMIN: list[DependsParam] = [Depends(require("admin"))]
"""Route dependencies of writes: a key with the ``admin`` scope."""


@dataclass(frozen=True, slots=True)
class ManagementContext:
    """What the app's services share: settings, backends, the bitmap cache, the
    processor's request channel."""

    settings: Settings
    backends: Backends
    cache: MembershipCache
    processor: ProcessorClient


def context(request: Request) -> ManagementContext:
    """The context the app was started with."""
    found: ManagementContext = request.app.state.context
    return found


ContextDep = Annotated[ManagementContext, Depends(context)]


def segment_service(ctx: ContextDep) -> SegmentService:
    """Segments over the catalog, the state store and the processor."""
    return SegmentService(ctx.backends.catalog, ctx.backends.store, ctx.processor)


def member_service(ctx: ContextDep) -> MemberService:
    """Segment members over the catalog, the state store and the processor."""
    return MemberService(ctx.backends.catalog, ctx.backends.store, ctx.processor)


def audience_service(ctx: ContextDep) -> AudienceService:
    """Audience counts over the catalog and the bitmap cache."""
    return AudienceService(ctx.backends.catalog, ctx.cache)


def user_service(ctx: ContextDep) -> UserService:
    """Users over the catalog, the state store, the event log and the processor."""
    backends = ctx.backends
    return UserService(
        backends.catalog,
        backends.store,
        backends.bus,
        ctx.processor,
        erase_timeout=ctx.processor.timeout,
    )


def attribute_service(ctx: ContextDep) -> AttributeService:
    """Computed attributes over the catalog."""
    return AttributeService(ctx.backends.catalog)


SegmentServiceDep = Annotated[SegmentService, Depends(segment_service)]
MemberServiceDep = Annotated[MemberService, Depends(member_service)]
AudienceServiceDep = Annotated[AudienceService, Depends(audience_service)]
UserServiceDep = Annotated[UserService, Depends(user_service)]
AttributeServiceDep = Annotated[AttributeService, Depends(attribute_service)]
