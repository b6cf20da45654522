"""`Authorization: Token <key>` against hashed API tokens."""

from datetime import timedelta

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from tenants.models import APIToken

# Recording every use would add a write to every request; a minute is precise enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class APITokenAuthentication(TokenAuthentication):
    """DRF's token header, looked up by the key's digest."""

    def authenticate_credentials(self, key: str):
        token = APIToken.objects.select_related("user").filter(digest=APIToken.digest_of(key)).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            APIToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
