from django import forms

from hosts.models import Host
from metrics.choices import Comparison, Measure, Target


class AlertRuleForm(forms.Form):
    name = forms.CharField(max_length=100)
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="The platform (hosts, every tenant)")
    target = forms.ChoiceField(choices=Target.choices, initial=Target.INSTANCE, label="Watches")
    instance = forms.ModelChoiceField(queryset=None, required=False, empty_label="every instance",
                                      help_text="Instances only: one of them, or every one.")
    host = forms.ModelChoiceField(queryset=Host.objects.all(), required=False, empty_label="every host",
                                  help_text="Hosts only: one of them, or every one.")
    measure = forms.ChoiceField(choices=Measure.choices)
    comparison = forms.ChoiceField(choices=Comparison.choices, initial=Comparison.ABOVE)
    threshold = forms.FloatField(min_value=0, max_value=1e15)
    minutes = forms.IntegerField(min_value=1, max_value=360, initial=10, label="For (minutes)",
                                 help_text="Every sample over this long must meet it (at most 6 hours).")

    def __init__(self, *args, tenants, instances, platform_wide: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        self.fields["instance"].queryset = instances
        self.fields["tenant"].required = not platform_wide
        if not platform_wide:
            self.fields["tenant"].empty_label = None
            for name in ("target", "host"):
                del self.fields[name]
