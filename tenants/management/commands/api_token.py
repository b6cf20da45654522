"""Create an API token for a user and print it (only its digest is stored)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from cloudpanel.exceptions import DomainError
from tenants.models import Tenant
from tenants.services import create_api_token


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--tenant", help="the tenant the token is bound to (platform admins may leave it out "
                                             "for a token that acts across all tenants)")

    def handle(self, *args, username: str, name: str, tenant: str | None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named '{username}'")
        bound = None
        if tenant is not None:
            bound = Tenant.objects.filter(name=tenant).first()
            if bound is None:
                raise CommandError(f"no tenant named '{tenant}'")
        try:
            _token, key = create_api_token(user=user, name=name, tenant=bound)
        except DomainError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(key)
