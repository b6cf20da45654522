"""`Authorization: Token <key>` against hashed API tokens bound to a tenant."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from tenants.models import APIToken, Membership

# Recording every use would add a write to every request; a minute is precise enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class APITokenAuthentication(TokenAuthentication):
    """DRF's token header, looked up by the key's digest; expired and revoked tokens answer 401."""

    def authenticate_credentials(self, key: str):
        token = APIToken.objects.select_related("user").filter(digest=APIToken.digest_of(key)).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This token has been revoked.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("This token has expired.")
        if token.tenant_id is None and not token.user.is_staff:
            raise exceptions.AuthenticationFailed("This platform-wide token's user is no longer a platform admin.")
        # The user's memberships, read once here: the request's scope is made from them too (tenants.scoping).
        token.user_memberships = list(Membership.objects.filter(user_id=token.user_id).select_related("tenant")
                                 .order_by("tenant__name"))
        if (token.tenant_id is not None and not token.user.is_staff
                and all(membership.tenant_id != token.tenant_id for membership in token.user_memberships)):
            raise exceptions.AuthenticationFailed("This token's user is no longer a member of its tenant.")
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            APIToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
