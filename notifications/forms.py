from django import forms

from notifications.choices import Channel, Kind


class SubscriptionForm(forms.Form):
    name = forms.CharField(max_length=100)
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label="The platform (hosts, every tenant)")
    channel = forms.ChoiceField(choices=Channel.choices, initial=Channel.EMAIL)
    email = forms.EmailField(required=False, label="E-mail address", help_text="For an e-mail subscription.")
    url = forms.URLField(required=False, max_length=500, label="Webhook URL", assume_scheme="https",
                         help_text="For a webhook: each event is POSTed as JSON, signed with the subscription's "
                                   "secret (X-CloudPanel-Signature).")
    kinds = forms.MultipleChoiceField(choices=Kind.choices, required=False, label="Events",
                                      help_text="None chosen: every event it may hear of.")

    def __init__(self, *args, tenants, platform_wide: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants
        self.fields["tenant"].required = not platform_wide
        if not platform_wide:
            self.fields["tenant"].empty_label = None
        self.fields["kinds"].widget.attrs["size"] = len(Kind.choices)
