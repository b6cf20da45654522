"""The API router and the exception handler that turns domain errors into 4xx (the scoped viewset base is
tenants/viewsets.py)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.views import exception_handler as drf_exception_handler

from cloudpanel.exceptions import Conflict, DomainError, Forbidden, NotFound, Unavailable
from cloudpanel.scoping import NoSuchTenant


class Router(DefaultRouter):
    include_format_suffixes = False  # one format, JSON: no .json routes for views to take a format argument


router = Router()


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, plus domain errors: not found 404, forbidden 403, conflicts 409, a service down 503, other
    refusals 400."""
    if isinstance(exc, NoSuchTenant):
        return Response({"detail": "No such tenant."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, NotFound):
        return Response({"detail": str(exc)}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, Forbidden):
        return Response({"detail": str(exc)}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, Unavailable):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE,
                        headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, Conflict):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DomainError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": exc.messages}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
