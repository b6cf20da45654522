"""`Authorization: Token <key>` against hashed API tokens."""

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from tenants.models import APIToken


class APITokenAuthentication(TokenAuthentication):
    """DRF's token header, looked up by the key's digest."""

    def authenticate_credentials(self, key: str):
        token = APIToken.objects.select_related("user").filter(digest=APIToken.digest_of(key)).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        APIToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token
