"""The hot spots page: the busiest hosts (for platform admins) and instances, now."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from metrics.hot import Sort, hottest
from tenants.scoping import scope_of


@login_required
def hot_spots(request):
    sort = Sort(request.GET["by"]) if request.GET.get("by") in Sort.values else Sort.CPU
    found = hottest(scope=scope_of(request), sort=sort, limit=15)
    return render(request, "metrics/hot.html", {"hosts": found.hosts, "instances": found.instances, "sort": sort,
                                                "sorts": Sort.choices})
