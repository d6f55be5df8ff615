"""People who sign in, and their roles in tenants."""

from __future__ import annotations

import uuid

from peewee import IntegrityError, fn

from swiftmail_core.db import system_db, system_tx
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.models import Membership, Tenant, User
from swiftmail_core.passwords import MIN_PASSWORD_LENGTH, hash_password
from swiftmail_core.principal import ROLES


def create_user(
    email: str, password: str, *, name: str = "", tenant: Tenant | None = None, role: str = "viewer"
) -> User:
    """Create a user (argon2 hash) and optionally a membership with a role."""
    if "@" not in email or len(email) > 254:
        raise ValidationError.for_field("email", "is not an email address")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError.for_field(
            "password", f"must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    if role not in ROLES:
        raise ValidationError.for_field("role", f"must be one of {', '.join(ROLES)}")
    user_id = uuid.uuid4()
    try:
        with system_tx():
            User.insert(
                id=user_id, email=email, name=name, password_hash=hash_password(password)
            ).bind(system_db).execute()
            if tenant is not None:
                Membership.insert(tenant_id=tenant.id, user_id=user_id, role=role).bind(
                    system_db
                ).execute()
    except IntegrityError as ex:
        raise ConflictError(f"a user with email {email!r} already exists") from ex
    with system_tx():
        return User.select().where(User.id == user_id).bind(system_db).get()


def list_users(tenant: Tenant | None = None) -> list[tuple[User, str | None]]:
    """Return users (with their role in ``tenant`` when given)."""
    with system_tx():
        if tenant is None:
            return [(user, None) for user in User.select().order_by(User.email).bind(system_db)]
        query = (
            User.select(User, Membership.role)
            .join(Membership, on=(Membership.user_id == User.id))
            .where(Membership.tenant_id == tenant.id)
            .order_by(User.email)
            .bind(system_db)
            .objects()
        )
        return [(user, getattr(user, "role", None)) for user in query]


def _user_by_email(email: str) -> User:
    user = (User.select().where(fn.lower(User.email) == email.strip().lower())
            .bind(system_db).first())
    if user is None:
        raise NotFoundError(f"no user {email!r}: see `swiftmail user list`")
    return user


def set_membership(email: str, tenant: Tenant, role: str) -> bool:
    """Give the user ``role`` in ``tenant`` (added, or role changed); return True if added."""
    if role not in ROLES:
        raise ValidationError.for_field("role", f"must be one of {', '.join(ROLES)}")
    with system_tx():
        user = _user_by_email(email)
        changed = (Membership.update(role=role)
                   .where(Membership.tenant_id == tenant.id, Membership.user_id == user.id)
                   .bind(system_db).execute())
        if changed:
            return False
        Membership.insert(tenant_id=tenant.id, user_id=user.id, role=role).bind(
            system_db).execute()
        return True


def remove_membership(email: str, tenant: Tenant) -> None:
    """Take the user out of ``tenant`` (the user and other memberships stay)."""
    with system_tx():
        user = _user_by_email(email)
        removed = (Membership.delete()
                   .where(Membership.tenant_id == tenant.id, Membership.user_id == user.id)
                   .bind(system_db).execute())
    if not removed:
        raise NotFoundError(f"user {email!r} is not a member of {tenant.slug}")


def delete_user(email: str) -> None:
    """Delete a user and every membership (keys they created stay, unattributed)."""
    with system_tx():
        user = _user_by_email(email)
        User.delete().where(User.id == user.id).bind(system_db).execute()
